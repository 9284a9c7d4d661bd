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

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::Name;
use crate::io::write_file_atomic;

/// A JSON object of metadata, each value kept as the source wrote it: a
/// sidecar's integer beyond 2⁶³ (or a number with more digits than a
/// double holds) is copied digit for digit, not rounded through an f64.
pub type Metadata = BTreeMap<String, Box<RawValue>>;

/// A JSON object as `serde_json` reads it (descriptions nismooth reads fields of).
type Object = Map<String, Value>;

/// `value` as metadata.
fn raw(value: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("a JSON value always serializes")
}

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
            let bytes =
                crate::io::read_regular(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            match serde_json::from_slice::<Metadata>(&bytes) {
                Ok(m) => merged.extend(m),
                Err(e) if e.classify() == serde_json::error::Category::Data => {
                    return Err(format!("{}: not a JSON object", path.display()))
                }
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
    meta.insert("Sources".into(), raw(&json!([source_uri])));
    meta.entry("SkullStripped".into())
        .or_insert_with(|| raw(&Value::Bool(false)));
    meta.insert("Description".into(), raw(&json!(smoothing.description)));
    meta.insert("Smoothing".into(), raw(&smoothing.settings));
    let path = json_path(output);
    let text = serde_json::to_string_pretty(&meta).unwrap_or_default() + "\n";
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
    pub description: Object,
}

impl SourceLink {
    pub fn new(source_root: &Path, output_root: &Path) -> SourceLink {
        let description = crate::io::read_regular(&source_root.join("dataset_description.json"))
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

/// OUTPUT_DIR may be missing, an empty folder, a folder nismooth made
/// (it holds `.nismooth`, and only images its journals vouch for), or a
/// derivatives dataset: anything else (a raw
/// dataset above all, whose description would be rewritten as a
/// derivative's and whose folders would fill with derivatives) is refused
/// before any work, with the reason.
pub fn check_output_dataset(
    out: &Path,
    written: crate::plan::discover::WrittenIn,
) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return match std::fs::metadata(out) {
            Ok(_) => Err(format!(
                "OUTPUT_DIR {} is not a readable folder",
                out.display()
            )),
            Err(_) => Ok(()),
        };
    };
    let description = out.join("dataset_description.json");
    if description.exists() {
        let kind = read_object(&description)?
            .get("DatasetType")
            .and_then(Value::as_str)
            .map(str::to_string);
        return match kind.as_deref() {
            Some("derivative") => Ok(()),
            other => Err(format!(
                "OUTPUT_DIR {} is a {} BIDS dataset, not a derivatives one: nismooth writes only into an empty \
                 folder or a derivatives dataset (DatasetType \"derivative\"), and would rewrite its \
                 dataset_description.json; choose another OUTPUT_DIR",
                out.display(),
                other.map_or("raw (no DatasetType)".to_string(), |t| format!("\"{t}\"")),
            )),
        };
    }
    let mut names = entries.filter_map(Result::ok).map(|e| e.file_name());
    // Made by an earlier run that stopped before its description: every
    // image in it is one its journals vouch for (a one-file run's
    // `.nismooth` sits beside images of the folder's own).
    let ours = out.join(crate::plan::STATE_DIR).is_dir()
        && crate::plan::discover::foreign_image_below(out, Some(written)).is_none();
    match names.next() {
        None => Ok(()),
        Some(_) if ours => Ok(()),
        Some(name) => Err(format!(
            "OUTPUT_DIR {} holds files ({} among them) but no dataset_description.json: \
             nismooth writes only into an empty folder, one it made, or a derivatives dataset",
            out.display(),
            name.to_string_lossy()
        )),
    }
}

/// An existing derivative whose `DatasetLinks` names another dataset under
/// the source's key (or is no object) is refused: the sidecars' `bids:raw:`
/// URIs would point at that other dataset.
pub fn check_links(out: &Path, link: &SourceLink) -> Result<(), String> {
    let path = out.join("dataset_description.json");
    if !path.exists() {
        return Ok(());
    }
    let Some(links) = read_object(&path)?.get("DatasetLinks").cloned() else {
        return Ok(());
    };
    let Some(target) = links.as_object().map(|l| l.get(&link.name)) else {
        return Err(format!(
            "{}: DatasetLinks is not an object (BIDS: a name → URI map); fix it before adding to this dataset",
            path.display()
        ));
    };
    match target {
        Some(t) if t.as_str() != Some(link.target.as_str()) => Err(format!(
            "{}: DatasetLinks says {:?} is {t}, not {}: this derivative was made from another dataset, and its \
             sidecars' bids:{}: URIs would point there; choose another OUTPUT_DIR",
            path.display(),
            link.name,
            link.target,
            link.name
        )),
        _ => Ok(()),
    }
}

/// A JSON file that must hold an object.
fn read_object(path: &Path) -> Result<Object, String> {
    let bytes = crate::io::read_regular(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!("{}: not a JSON object", path.display())),
        Err(e) => Err(format!("{}: invalid JSON: {e}", path.display())),
    }
}

/// Refuses, before any work, an output whose sidecar says another kernel
/// made it: the same `desc-` label for two kernels would overwrite one with
/// the other (or, with `--skip-existing`, keep the old images under a
/// sidecar that claims the new settings). `outputs` are the run's images.
pub fn check_kernel_conflicts<'a>(
    outputs: impl IntoIterator<Item = &'a Path>,
    settings: &Value,
) -> Result<(), String> {
    for output in outputs {
        let json = json_path(output);
        if !json.exists() {
            continue;
        }
        let theirs = read_object(&json)?;
        let Some(made) = theirs.get("Smoothing") else {
            return Err(format!(
                "{} exists and says nothing of a smoothing: it was not made by nismooth; \
                 choose another --desc or OUTPUT_DIR",
                json.display()
            ));
        };
        if let Some(field) = crate::config::RunConfig::VALUE_SETTINGS
            .iter()
            .find(|f| made.get(**f) != settings.get(**f))
        {
            return Err(format!(
                "{} was made with other settings ({field}: {} there, {} now): \
                 the same desc- label for two kernels would mix them; give this kernel its own --desc",
                output.display(),
                made.get(*field).unwrap_or(&Value::Null),
                settings.get(*field).unwrap_or(&Value::Null),
            ));
        }
    }
    Ok(())
}

/// The words of a command that do not change what it makes: a `--resume`
/// or a `--skip-existing` of the same run is the same entry in GeneratedBy.
fn what_it_makes(command: &[String]) -> String {
    command
        .iter()
        .filter(|a| !matches!(a.as_str(), "--resume" | "--skip-existing"))
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `dataset_description.json` of the derivatives dataset at `root`
/// (and a README when there is none): what made it, from what, and how.
/// An existing description keeps every field it has (its Name, License,
/// Authors, HowToAcknowledge…); nismooth adds its entry to GeneratedBy and
/// its source to SourceDatasets and DatasetLinks.
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
        "Description": format!("{} Command: {}", smoothing.description, what_it_makes(command)),
    });
    let source_name = src
        .get("Name")
        .and_then(Value::as_str)
        .unwrap_or("a BIDS dataset");
    let mut source = json!({"URL": format!("bids:{}:", link.name)});
    if let Some(doi) = src.get("DatasetDOI") {
        source["DOI"] = doi.clone();
    }
    let existing = read_object(&root.join("dataset_description.json")).unwrap_or_default();
    let mut description = existing.clone();
    let mut put = |key: &str, value: Value| {
        description.entry(key).or_insert(value);
    };
    put(
        "Name",
        json!(format!("{source_name}, smoothed by nismooth")),
    );
    put(
        "BIDSVersion",
        src.get("BIDSVersion").cloned().unwrap_or(json!("1.10.0")),
    );
    put("DatasetType", json!("derivative"));
    // A derivatives folder may hold several kernels (several desc- labels):
    // each run that wrote into it is kept in GeneratedBy, once.
    // BIDS makes these arrays; one given as a single value (fMRIPrep's
    // GeneratedBy object, a SourceDatasets string) is kept, as the first.
    let list = |key: &str| match existing.get(key) {
        Some(Value::Array(a)) => a.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(one) => vec![one.clone()],
    };
    let mut generated_by = list("GeneratedBy");
    if !generated_by.contains(&ours) {
        generated_by.push(ours);
    }
    let mut sources = list("SourceDatasets");
    if !sources.contains(&source) {
        sources.push(source);
    }
    let mut links = existing
        .get("DatasetLinks")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    links
        .entry(link.name.clone())
        .or_insert(json!(link.target.clone()));
    description.insert("GeneratedBy".into(), json!(generated_by));
    description.insert("SourceDatasets".into(), json!(sources));
    description.insert("DatasetLinks".into(), Value::Object(links));
    let description = Value::Object(description);
    let text = serde_json::to_string_pretty(&description).unwrap_or_default() + "\n";
    write_file_atomic(&root.join("dataset_description.json"), text.as_bytes())?;
    write_readme(root, source_name, link, &generated_by)
}

/// Marks a README that nismooth wrote, and rewrites with each run.
const README_MARK: &str =
    "<!-- written by nismooth: each run that writes here rewrites this file -->";

/// The derivative's README: what it is, and every kernel that a run wrote
/// into the folder (from GeneratedBy), so that an 8 mm run added beside a
/// 6 mm one shows both. A README of anyone else's is left alone.
fn write_readme(
    root: &Path,
    source_name: &str,
    link: &SourceLink,
    generated_by: &[Value],
) -> Result<(), crate::io::WriteError> {
    let readme = root.join("README.md");
    let ours = std::fs::read_to_string(&readme).is_ok_and(|t| t.contains(README_MARK));
    if !ours && (readme.exists() || root.join("README").exists()) {
        return Ok(());
    }
    let kernels: String = generated_by
        .iter()
        .filter(|g| g.get("Name").and_then(Value::as_str) == Some("nismooth"))
        .filter_map(|g| g.get("Description").and_then(Value::as_str))
        .map(|d| format!("- {d}\n"))
        .collect();
    let text = format!(
        "# {source_name}, smoothed\n\n{README_MARK}\n\nA BIDS derivatives dataset made by nismooth {}: \
         each image of the source dataset ({}) that a command selected, smoothed.\n\n\
         Every run that wrote here, with its kernel:\n\n{kernels}\nEach image's JSON sidecar names its \
         source (`Sources`) and its own settings (`Smoothing`); its `desc-` label tells the kernels apart.\n",
        env!("CARGO_PKG_VERSION"),
        link.target,
    );
    write_file_atomic(&readme, text.as_bytes())
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
        assert_eq!(m["RepetitionTime"].get(), "2.5");
        assert_eq!(m["TaskName"].get(), "\"rest\"");
        assert_eq!(m["EchoTime"].get(), "0.03");
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
