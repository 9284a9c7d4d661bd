//! The full report as pretty JSON (the machine-readable record of a run).

use super::{ExportError, Exporter, Report};

pub struct Json;

impl Exporter for Json {
    fn render(&self, report: &Report) -> Result<String, ExportError> {
        Ok(serde_json::to_string_pretty(report)? + "\n")
    }
}
