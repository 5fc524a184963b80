//! Reading a SEED model's CSV file.
//!
//! Invariants:
//! - With declared columns, every field is read as text and cast to its declared type (an
//!   empty field is NULL), so the table has exactly the declared schema.
//! - Without, types are inferred from every row, not a sample, so a late odd value makes its
//!   column text instead of failing the read halfway.
//! - The file was checked when the project loaded (`project::seed`); a failure here means it
//!   changed since.

use std::path::Path;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::{CsvReadOptions, DataFrame, SessionContext};

use super::session;
use crate::error::{Diagnostic, Error, Result};

/// The rows of the seed at `path`, typed by `columns` (name, SQL type) when declared: a
/// DataFrame, read as it is executed (streamed, never collected whole).
pub async fn read(
    ctx: &SessionContext,
    path: &Path,
    columns: &[(String, String)],
) -> Result<DataFrame> {
    let p = path.to_string_lossy();
    let cannot = |e: &dyn std::fmt::Display| {
        Error::from(
            Diagnostic::error(format!("cannot read the seed `{p}`"))
                .caused_by(e)
                .hint("the seed was checked when the project loaded; was it changed since?"),
        )
    };
    let options = CsvReadOptions::new()
        .has_header(true)
        .schema_infer_max_records(usize::MAX);
    if columns.is_empty() {
        return ctx
            .read_csv(p.as_ref(), options)
            .await
            .map_err(|e| cannot(&e));
    }
    let header = csv_header(path).map_err(|e| cannot(&e))?;
    let text = Schema::new(
        header
            .iter()
            .map(|h| Field::new(h.as_str(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    );
    let df = ctx
        .read_csv(p.as_ref(), options.schema(&text))
        .await
        .map_err(|e| cannot(&e))?;
    let select: Vec<String> = columns
        .iter()
        .map(|(name, ty)| {
            let source = header
                .iter()
                .find(|h| h.eq_ignore_ascii_case(name))
                .map_or(name.as_str(), String::as_str);
            format!(
                "CAST(NULLIF({}, '') AS {ty}) AS {}",
                quoted(source),
                quoted(name)
            )
        })
        .collect();
    let seed = session::new_context();
    seed.register_table("seed", df.into_view())
        .map_err(|e| cannot(&e))?;
    let sql = format!("SELECT {} FROM seed", select.join(", "));
    seed.sql_with_options(&sql, session::read_only())
        .await
        .map_err(|e| cannot(&e))
}

/// The columns the table of the seed at `path` gets (name, SQL type; `None`: a type with no
/// plain SQL name): the declared ones, else those inferred from the file. For checking the
/// models that read a seed before it is built.
pub fn columns(path: &Path, declared: &[(String, String)]) -> Result<super::Analyzed> {
    if !declared.is_empty() {
        return Ok(declared
            .iter()
            .map(|(c, t)| (c.clone(), Some(t.clone())))
            .collect());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| Error::Bug(format!("starting a runtime: {e}")))?;
    let df = rt.block_on(read(&super::session::new_context(), path, declared))?;
    Ok(df
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), sql_type(f.data_type())))
        .collect())
}

/// The SQL name of a type CSV inference gives, in words both engines' SQL accept.
fn sql_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 | DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(_, None) => "TIMESTAMP".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        _ => return None,
    })
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The header row of a CSV file.
fn csv_header(path: &Path) -> std::result::Result<Vec<String>, csv::Error> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)?;
    Ok(r.headers()?.iter().map(str::to_string).collect())
}
