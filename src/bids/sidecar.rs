//! The metadata of a derivatives dataset: a JSON sidecar per output, and
//! `dataset_description.json`.
//!
//! A sidecar carries the source image's metadata with BIDS inheritance
//! resolved (every applicable JSON from the dataset's root down to the
//! image's folder, the more specific overriding), the source as a BIDS URI
//! (`bids:raw:sub-01/anat/sub-01_T1w.nii.gz`, the link declared in
//! `DatasetLinks`), and the smoothing applied. Every file is written to a
//! temp file and renamed into place, as the images are.

use std::path::{Component, Path, PathBuf};

use serde_json::{json, Map, Value};

use super::Name;
use crate::io::write_file_atomic;

/// A JSON object of metadata.
pub type Metadata = Map<String, Value>;

/// The source image's metadata by the inheritance principle: at each level
/// from `root` down to the image's folder, the JSON files whose suffix is
/// the image's and whose entities are all the image's, fewer entities first.
/// A sidecar that is not a JSON object is an error naming it: its
/// metadata would silently be missing from every derivative below it.
pub fn inherited(root: &Path, image: &Path) -> Result<Metadata, String> {
    let Some(name) = image
        .file_name()
        .and_then(|n| Name::parse(&n.to_string_lossy()))
    else {
        return Ok(Metadata::new());
    };
    let rel = image.strip_prefix(root).unwrap_or(image);
    let mut levels = vec![root.to_path_buf()];
    for c in rel.parent().into_iter().flat_map(Path::components) {
        if let Component::Normal(part) = c {
            let next = levels.last().unwrap().join(part);
            levels.push(next);
        }
    }
    let mut merged = Metadata::new();
    for level in levels {
        for (_, path) in applicable(&level, &name) {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => merged.extend(m),
                Ok(_) => return Err(format!("{}: not a JSON object", path.display())),
                Err(e) => return Err(format!("{}: invalid JSON: {e}", path.display())),
            }
        }
    }
    Ok(merged)
}

/// The sidecars in `dir` that apply to `image`, fewer entities first.
fn applicable(dir: &Path, image: &Name) -> Vec<(usize, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(usize, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = Name::parse(&e.file_name().to_string_lossy())?;
            let applies = n.extension == ".json"
                && n.suffix == image.suffix
                && n.entities.iter().all(|(k, v)| image.get(k) == Some(v));
            applies.then(|| (n.entities.len(), e.path()))
        })
        .collect();
    found.sort();
    found
}

/// The smoothing applied, as the sidecars and the dataset describe it.
#[derive(Clone, Debug)]
pub struct Smoothing {
    /// One sentence, e.g. "Gaussian smoothing, FWHM 6 mm (nilearn's smooth_img)".
    pub description: String,
    /// The settings that made the outputs (`RunConfig::output_settings`).
    pub settings: Value,
}

/// Writes `output`'s sidecar (its name with `.json`): the source's
/// inherited metadata, `Sources`, `SkullStripped` (the source's, else
/// false: raw data is not skull-stripped), `Description` and `Smoothing`.
pub fn write_sidecar(
    output: &Path,
    source_uri: &str,
    mut meta: Metadata,
    smoothing: &Smoothing,
) -> Result<PathBuf, crate::io::WriteError> {
    meta.insert("Sources".into(), json!([source_uri]));
    meta.entry("SkullStripped").or_insert(Value::Bool(false));
    meta.insert("Description".into(), json!(smoothing.description));
    meta.insert("Smoothing".into(), smoothing.settings.clone());
    let path = json_path(output);
    let text = serde_json::to_string_pretty(&Value::Object(meta)).unwrap_or_default() + "\n";
    write_file_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// `x.nii.gz` → `x.json`.
pub fn json_path(image: &Path) -> PathBuf {
    let name = image.file_name().unwrap_or_default().to_string_lossy();
    let stem = name.split_once('.').map_or(&*name, |(s, _)| s);
    image.with_file_name(format!("{stem}.json"))
}

/// How the derivatives dataset names and finds its source.
#[derive(Clone, Debug)]
pub struct SourceLink {
    /// The key in `DatasetLinks` (`raw`, or `source` for a derivatives input).
    pub name: String,
    /// The source's root, relative to the derivatives' root when they share
    /// a file system path prefix, else absolute.
    pub target: String,
    /// The source's own dataset_description.json.
    pub description: Metadata,
}

impl SourceLink {
    pub fn new(source_root: &Path, output_root: &Path) -> SourceLink {
        let description = std::fs::read(source_root.join("dataset_description.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        let raw = description
            .get("DatasetType")
            .and_then(Value::as_str)
            .is_none_or(|t| t == "raw");
        SourceLink {
            name: if raw { "raw" } else { "source" }.into(),
            target: relative(source_root, output_root),
            description,
        }
    }

    /// The BIDS URI of a file at `rel` below the source's root.
    pub fn uri(&self, rel: &Path) -> String {
        format!("bids:{}:{}", self.name, rel.display())
    }
}

/// `to` as seen from `from`: `../raw` where both resolve under one prefix.
fn relative(to: &Path, from: &Path) -> String {
    let (Ok(to), Ok(from)) = (std::fs::canonicalize(to), std::fs::canonicalize(from)) else {
        return to.display().to_string();
    };
    let common = to
        .components()
        .zip(from.components())
        .take_while(|(a, b)| a == b)
        .count();
    let ups = from.components().count() - common;
    let mut rel = PathBuf::new();
    for _ in 0..ups {
        rel.push("..");
    }
    for c in to.components().skip(common) {
        rel.push(c);
    }
    if rel.as_os_str().is_empty() {
        ".".into()
    } else {
        rel.display().to_string()
    }
}

/// Writes `dataset_description.json` of the derivatives dataset at `root`
/// (and a README when there is none): what made it, from what, and how.
pub fn write_dataset_description(
    root: &Path,
    link: &SourceLink,
    command: &[String],
    smoothing: &Smoothing,
) -> Result<(), crate::io::WriteError> {
    let src = &link.description;
    let ours = json!({
        "Name": "nismooth",
        "Version": env!("CARGO_PKG_VERSION"),
        "Description": format!("{} Command: {}", smoothing.description, command.join(" ")),
    });
    // A derivatives folder may hold several kernels (several desc- labels):
    // each run that wrote into it is kept in GeneratedBy.
    let mut generated_by = earlier_generators(root);
    if !generated_by.contains(&ours) {
        generated_by.push(ours);
    }
    let source_name = src
        .get("Name")
        .and_then(Value::as_str)
        .unwrap_or("a BIDS dataset");
    let mut source = json!({"URL": format!("bids:{}:", link.name)});
    if let Some(doi) = src.get("DatasetDOI") {
        source["DOI"] = doi.clone();
    }
    let description = json!({
        "Name": format!("{source_name}, smoothed by nismooth"),
        "BIDSVersion": src.get("BIDSVersion").cloned().unwrap_or(json!("1.10.0")),
        "DatasetType": "derivative",
        "GeneratedBy": generated_by,
        "SourceDatasets": [source],
        "DatasetLinks": {link.name.clone(): link.target.clone()},
    });
    let text = serde_json::to_string_pretty(&description).unwrap_or_default() + "\n";
    write_file_atomic(&root.join("dataset_description.json"), text.as_bytes())?;
    let readme = root.join("README.md");
    if !readme.exists() && !root.join("README").exists() {
        let text = format!(
            "# {source_name}, smoothed\n\nA BIDS derivatives dataset made by nismooth {}: \
             each image of the source dataset ({}) that the command selected, smoothed.\n\n\
             {}\n\nEach image's JSON sidecar names its source (`Sources`) and the settings \
             (`Smoothing`).\n",
            env!("CARGO_PKG_VERSION"),
            link.target,
            smoothing.description
        );
        write_file_atomic(&readme, text.as_bytes())?;
    }
    Ok(())
}

/// The `GeneratedBy` entries of a derivatives dataset already at `root`.
fn earlier_generators(root: &Path) -> Vec<Value> {
    std::fs::read(root.join("dataset_description.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("GeneratedBy")?.as_array().cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inheritance_goes_from_the_root_down_and_keeps_to_its_entities() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        let func = root.join("sub-01/func");
        std::fs::create_dir_all(&func).unwrap();
        let put = |p: &str, v: Value| std::fs::write(root.join(p), v.to_string()).unwrap();
        put(
            "task-rest_bold.json",
            json!({"RepetitionTime": 2.0, "TaskName": "rest"}),
        );
        put("task-other_bold.json", json!({"TaskName": "other"}));
        put("T1w.json", json!({"Field": "anat only"}));
        put(
            "sub-01/sub-01_task-rest_bold.json",
            json!({"RepetitionTime": 2.5}),
        );
        put(
            "sub-01/func/sub-01_task-rest_run-1_bold.json",
            json!({"EchoTime": 0.03}),
        );
        let img = func.join("sub-01_task-rest_run-1_bold.nii.gz");
        let m = inherited(root, &img).unwrap();
        assert_eq!(m["RepetitionTime"], json!(2.5));
        assert_eq!(m["TaskName"], json!("rest"));
        assert_eq!(m["EchoTime"], json!(0.03));
        assert!(!m.contains_key("Field"));
        let run2 = inherited(root, &func.join("sub-01_task-rest_run-2_bold.nii.gz")).unwrap();
        assert!(!run2.contains_key("EchoTime"));
        put(
            "sub-01/sub-01_task-rest_bold.json",
            json!(["not an object"]),
        );
        let err = inherited(root, &img).unwrap_err();
        assert!(
            err.contains("sub-01_task-rest_bold.json: not a JSON object"),
            "{err}"
        );
    }

    #[test]
    fn relative_links() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("raw");
        let out = d.path().join("raw/derivatives/nismooth");
        std::fs::create_dir_all(&out).unwrap();
        assert_eq!(relative(&raw, &out), "../..");
        assert_eq!(
            json_path(Path::new("/o/sub-01_desc-s_T1w.nii.gz")),
            Path::new("/o/sub-01_desc-s_T1w.json")
        );
    }
}
