//! One CSV row per image, for spreadsheets and pandas.

use super::{ExportError, Exporter, Report};

pub struct Csv;

impl Exporter for Csv {
    fn render(&self, report: &Report) -> Result<String, ExportError> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record([
            "index",
            "input",
            "output",
            "rank",
            "status",
            "voxels",
            "shape",
            "dtype_in",
            "dtype_out",
            "bytes_in",
            "bytes_out",
            "read_s",
            "filter_s",
            "write_s",
            "error",
        ])?;
        for r in &report.images {
            let shape = r
                .shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x");
            w.write_record([
                r.index.to_string(),
                r.input.clone(),
                r.output.clone(),
                r.rank.to_string(),
                serde_json::to_value(r.status)?
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                r.voxels.to_string(),
                shape,
                r.dtype_in.clone().unwrap_or_default(),
                r.dtype_out.clone().unwrap_or_default(),
                r.bytes_in.to_string(),
                r.bytes_out.to_string(),
                format!("{:.6}", r.read_s),
                format!("{:.6}", r.filter_s),
                format!("{:.6}", r.write_s),
                r.error.clone().unwrap_or_default(),
            ])?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| ::csv::Error::from(e.into_error()))?;
        Ok(String::from_utf8(bytes)?)
    }
}
