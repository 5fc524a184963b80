//! Checking a SEED model's CSV file when the project loads, so a bad seed is refused with its
//! line before anything is planned or written.
//!
//! Invariants:
//! - A seed file is read as a stream (hashed and checked through small buffers), never held
//!   whole in memory, whatever its size.
//! - The file is UTF-8, has a header of distinct, non-empty column names, and every row has
//!   exactly the header's number of fields (quoted fields may hold commas and newlines).
//! - With `columns (...)` declared, the header names exactly the declared columns (any order)
//!   and every non-empty value parses as its column's declared type; the apply reads the file
//!   with those types. Without it, types are inferred from every row at apply time, so a late
//!   odd value makes a column text instead of failing the read.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Diagnostic, Location, did_you_mean};

/// The blake3 hash (hex) of the seed file at `path`, read through a small buffer.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    h.update_reader(std::fs::File::open(path)?)?;
    Ok(h.finalize().to_hex().to_string())
}

/// Check the seed read from `source` (the file `file`, as shown in messages) against the
/// declared `columns` (name, SQL type; empty when undeclared), one record at a time.
pub fn check(
    source: impl std::io::Read,
    file: &Path,
    columns: &[(String, String)],
) -> Result<(), Diagnostic> {
    let at = |line: u64| Location::at(file, line, 0);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(source);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(file, &e))?
        .iter()
        .map(str::to_string)
        .collect();
    if header.is_empty() || header.iter().all(String::is_empty) {
        return Err(Diagnostic::error("the seed file has no header row")
            .at(at(1))
            .hint("the first line names the columns, e.g. `id,name`"));
    }
    let mut seen = BTreeSet::new();
    for (i, h) in header.iter().enumerate() {
        if h.trim().is_empty() {
            return Err(Diagnostic::error(format!(
                "column {} of the seed header has no name",
                i + 1
            ))
            .at(at(1)));
        }
        if !seen.insert(h.as_str()) {
            return Err(Diagnostic::error(format!("the seed header names `{h}` twice")).at(at(1)));
        }
    }
    let declared: Vec<(usize, &str, Kind)> = if columns.is_empty() {
        Vec::new()
    } else {
        check_header(&header, columns, file)?
    };
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(file, &e))?;
        let line = record.position().map_or(0, csv::Position::line);
        if record.len() != header.len() {
            return Err(Diagnostic::error(format!(
                "this row of the seed has {} field(s); the header has {}",
                record.len(),
                header.len()
            ))
            .at(at(line))
            .hint(
                "every row needs one value per header column (quote values that contain commas)",
            ));
        }
        for (i, name, kind) in &declared {
            let value = record.get(*i).unwrap_or_default();
            if !value.is_empty() && !kind.accepts(value) {
                return Err(Diagnostic::error(format!(
                    "value `{}` in column `{name}` of the seed is not {}",
                    value.escape_default(),
                    kind.describe()
                ))
                .at(at(line))
                .hint(format!(
                    "fix the value, or declare `{name}` with a type that holds it in `columns (...)`"
                )));
            }
        }
    }
    Ok(())
}

/// The declared columns must be exactly the header's; returns (header index, name, kind).
fn check_header<'a>(
    header: &[String],
    columns: &'a [(String, String)],
    file: &Path,
) -> Result<Vec<(usize, &'a str, Kind)>, Diagnostic> {
    let mut out = Vec::new();
    for (name, ty) in columns {
        let Some(i) = header.iter().position(|h| h.eq_ignore_ascii_case(name)) else {
            let mut d = Diagnostic::error(format!(
                "the model declares column `{name}`, which the seed's header does not have"
            ))
            .at(Location::at(file, 1, 0));
            if let Some(h) = did_you_mean(name, header.iter().map(String::as_str)) {
                d = d.hint(h);
            }
            return Err(d);
        };
        out.push((i, name.as_str(), Kind::of(ty)));
    }
    if let Some(extra) = header
        .iter()
        .find(|h| !columns.iter().any(|(c, _)| c.eq_ignore_ascii_case(h)))
    {
        return Err(Diagnostic::error(format!(
            "the seed has column `{extra}`, which the model's `columns (...)` does not declare"
        ))
        .at(Location::at(file, 1, 0))
        .hint("declare every column of the seed, or none to infer the types"));
    }
    Ok(out)
}

fn csv_error(file: &Path, e: &csv::Error) -> Diagnostic {
    let line = e.position().map_or(0, csv::Position::line);
    if let csv::ErrorKind::Utf8 { err, .. } = e.kind() {
        return Diagnostic::error(format!(
            "the seed file is not UTF-8 (an invalid byte in field {} of this row)",
            err.field() + 1
        ))
        .at(Location::at(file, line, 0))
        .hint("save the CSV as UTF-8");
    }
    Diagnostic::error("the seed file is not valid CSV")
        .at(Location::at(file, line, 0))
        .caused_by(e)
}

/// What a declared SQL type accepts, as far as a CSV value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Number,
    Boolean,
    Date,
    Timestamp,
    Text,
}

impl Kind {
    fn of(sql_type: &str) -> Kind {
        let t = sql_type.trim().to_ascii_uppercase();
        let base = t.split(['(', ' ']).next().unwrap_or("");
        match base {
            "TINYINT" | "SMALLINT" | "INT" | "INTEGER" | "BIGINT" => Kind::Integer,
            "FLOAT" | "REAL" | "DOUBLE" | "DECIMAL" | "NUMERIC" => Kind::Number,
            "BOOLEAN" | "BOOL" => Kind::Boolean,
            "DATE" => Kind::Date,
            "TIMESTAMP" | "DATETIME" => Kind::Timestamp,
            _ => Kind::Text,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::Boolean => "a boolean (true or false)",
            Kind::Date => "a date (YYYY-MM-DD)",
            Kind::Timestamp => "a timestamp (YYYY-MM-DD HH:MM:SS)",
            Kind::Text => "text",
        }
    }

    fn accepts(self, v: &str) -> bool {
        let v = v.trim();
        match self {
            Kind::Integer => v.parse::<i64>().is_ok(),
            Kind::Number => v.parse::<f64>().is_ok_and(f64::is_finite),
            Kind::Boolean => ["true", "false"].iter().any(|b| v.eq_ignore_ascii_case(b)),
            Kind::Date => chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok(),
            Kind::Timestamp => crate::interval::parse_instant(v).is_ok(),
            Kind::Text => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(csv: &str, columns: &[(&str, &str)]) -> String {
        let columns: Vec<(String, String)> = columns
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        check(csv.as_bytes(), Path::new("seeds/s.csv"), &columns)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn good_seeds_pass() {
        let ok = "id,name,at\n1,\"Smith, J\",2024-01-01\n2,\"two\nlines\",2024-01-02 10:00:00\n";
        check(ok.as_bytes(), Path::new("s.csv"), &[]).unwrap();
        let cols = [
            ("id".to_string(), "BIGINT".to_string()),
            ("name".to_string(), "VARCHAR".to_string()),
            ("at".to_string(), "TIMESTAMP".to_string()),
        ];
        check(ok.as_bytes(), Path::new("s.csv"), &cols).unwrap();
        // Empty values are NULLs of any type.
        check(&b"id,name\n,x\n"[..], Path::new("s.csv"), &cols[..2]).unwrap();
    }

    #[test]
    fn bad_seeds_say_where() {
        let e = err("a,b,c\n1,2,3\n4,5\n", &[]);
        assert!(
            e.contains("seeds/s.csv:3") && e.contains("2 field(s); the header has 3"),
            "{e}"
        );
        let e = err("a,a\n1,2\n", &[]);
        assert!(e.contains("names `a` twice"), "{e}");
        let e = err(
            "id,amount\n1,2.5\n2,x\n",
            &[("id", "BIGINT"), ("amount", "DOUBLE")],
        );
        assert!(
            e.contains("seeds/s.csv:3") && e.contains("`x` in column `amount`"),
            "{e}"
        );
        let e = err("id,n\n1.5,2\n", &[("id", "INT"), ("n", "INT")]);
        assert!(e.contains("is not an integer"), "{e}");
        let e = err("id,extra\n1,2\n", &[("id", "BIGINT")]);
        assert!(e.contains("does not declare"), "{e}");
        let e = err("id\n1\n", &[("id", "BIGINT"), ("idd", "BIGINT")]);
        assert!(e.contains("declares column `idd`"), "{e}");
        let e = check(&b"a,b\n1,2\n3,\xff\n"[..], Path::new("s.csv"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not UTF-8") && e.contains("field 2") && e.contains("s.csv:3"),
            "{e}"
        );
        let e = check(&b"a,\xffb\n1,2\n"[..], Path::new("s.csv"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not UTF-8") && e.contains("s.csv:1"), "{e}");
    }

    /// A seed larger than any buffer is hashed and checked through the file, with the same
    /// hash as its bytes' and the line of a late error.
    #[test]
    fn a_large_seed_streams_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.csv");
        let mut text = String::from("id,name\n");
        for i in 0..40_000 {
            text.push_str(&format!("{i},\"name {i}\"\n"));
        }
        std::fs::write(&path, &text).unwrap();
        assert_eq!(
            hash_file(&path).unwrap(),
            blake3::hash(text.as_bytes()).to_hex().to_string()
        );
        let cols = [
            ("id".to_string(), "BIGINT".to_string()),
            ("name".to_string(), "VARCHAR".to_string()),
        ];
        check(std::fs::File::open(&path).unwrap(), &path, &cols).unwrap();
        text.push_str("40000,?\n");
        let mut bytes = text.into_bytes();
        // A lone continuation byte: invalid UTF-8 on line 40,002.
        let n = bytes.len();
        bytes[n - 2] = 0x80;
        std::fs::write(&path, &bytes).unwrap();
        let e = check(std::fs::File::open(&path).unwrap(), &path, &cols)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not UTF-8") && e.contains("big.csv:40002"),
            "{e}"
        );
        assert!(hash_file(&dir.path().join("missing.csv")).is_err());
    }
}
