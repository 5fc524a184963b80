//! DuckDB's JSON extraction on the built-in engine: `json_extract_string(json, path)` (what
//! `json ->> path` becomes) and `json_extract(json, path)` (`json -> path`), registered in every
//! session.
//!
//! Paths follow DuckDB: `'$.a.b[0]'` (JSONPath: `.key`, `["key"]`, `[index]`), `'/a/b/0'` (JSON
//! pointer), or a plain top-level key. Invariants: a NULL input, a document that does not parse,
//! or a path that finds nothing gives NULL (never an error mid-batch); `json_extract_string` of a
//! JSON string is the string itself, of anything else its JSON text, of JSON `null` NULL.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// The two functions, to register in a session.
pub fn functions() -> [ScalarUDF; 2] {
    [
        ScalarUDF::new_from_impl(JsonExtract::new("json_extract_string", true)),
        ScalarUDF::new_from_impl(JsonExtract::new("json_extract", false)),
    ]
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonExtract {
    name: &'static str,
    /// `->>`: strings unquoted.
    text: bool,
    signature: Signature,
}

impl JsonExtract {
    fn new(name: &'static str, text: bool) -> JsonExtract {
        JsonExtract {
            name,
            text,
            signature: Signature::string(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonExtract {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.to_array(n).and_then(|a| Ok(cast(&a, &DataType::Utf8)?)))
            .collect::<Result<_>>()?;
        let (Some(docs), Some(paths)) = (
            arrays[0].as_any().downcast_ref::<StringArray>(),
            arrays[1].as_any().downcast_ref::<StringArray>(),
        ) else {
            return Err(datafusion::common::DataFusionError::Internal(format!(
                "{}: arguments are not text",
                self.name
            )));
        };
        let mut out = StringBuilder::with_capacity(n, n * 8);
        for i in 0..n {
            let found = (!docs.is_null(i) && !paths.is_null(i))
                .then(|| extract(docs.value(i), paths.value(i), self.text))
                .flatten();
            out.append_option(found);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The value at `path` in the JSON `doc` (see the module).
pub fn extract(doc: &str, path: &str, text: bool) -> Option<String> {
    let root: serde_json::Value = serde_json::from_str(doc).ok()?;
    let found = if let Some(rest) = path.strip_prefix('$') {
        walk(&root, rest)?
    } else if path.starts_with('/') {
        root.pointer(path)?
    } else {
        root.get(path)?
    };
    match found {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if text => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// A JSONPath of `.key`, `["key"]` and `[index]` steps.
fn walk<'a>(mut at: &'a serde_json::Value, mut path: &str) -> Option<&'a serde_json::Value> {
    while !path.is_empty() {
        if let Some(rest) = path.strip_prefix('.') {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            at = at.get(&rest[..end])?;
            path = &rest[end..];
        } else if let Some(rest) = path.strip_prefix('[') {
            let end = rest.find(']')?;
            let step = rest[..end].trim();
            at = match step.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
                Some(key) => at.get(key)?,
                None => at.get(step.parse::<usize>().ok()?)?,
            };
            path = &rest[end + 1..];
        } else {
            return None;
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::extract;

    #[test]
    fn paths_follow_duckdb() {
        let doc = r#"{"a": {"b": [10, {"c": "x"}]}, "s": "text", "n": null, "k": 1.5}"#;
        assert_eq!(extract(doc, "s", true).as_deref(), Some("text"));
        assert_eq!(extract(doc, "s", false).as_deref(), Some("\"text\""));
        assert_eq!(extract(doc, "$.a.b[0]", true).as_deref(), Some("10"));
        assert_eq!(extract(doc, "$.a.b[1].c", true).as_deref(), Some("x"));
        assert_eq!(
            extract(doc, "$[\"a\"].b[1]", false).as_deref(),
            Some("{\"c\":\"x\"}")
        );
        assert_eq!(extract(doc, "/a/b/1/c", true).as_deref(), Some("x"));
        assert_eq!(extract(doc, "k", true).as_deref(), Some("1.5"));
        assert_eq!(extract(doc, "n", true), None);
        assert_eq!(extract(doc, "$.missing", true), None);
        assert_eq!(extract("not json", "a", true), None);
    }
}
