//! Deterministic synthetic T1-like phantoms, so every test and benchmark can
//! make its own data: nested smooth ellipsoids (scalp, grey matter, white
//! matter, ventricles) plus Rician or Gaussian noise, 1 mm voxels, a centred
//! affine. The same seed gives the same bytes on any machine and thread count
//! (each z-slice draws from its own seeded stream).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::io::{self, OutputFormat, WriteOptions};
use crate::volume::{DType, Sample, VoxelVec, Voxels};
use crate::with_dtype;

/// The noise added to the phantoms.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum NoiseChoice {
    Rician,
    Gaussian,
}
crate::choice::named_choices!(NoiseChoice { Rician => "rician", Gaussian => "gaussian" });

/// A phantom shape that is not 1 to 7 sizes of 1..=32767 (NIfTI-1's
/// `dim` holds seven signed 16-bit sizes).
#[derive(Debug, thiserror::Error)]
#[error("shape '{0}': expected 1 to 7 comma-separated sizes, each 1..32767")]
pub struct BadShape(pub String);

/// A shape written as `X,Y,Z[,T…]`.
pub fn parse_shape(text: &str) -> Result<Vec<usize>, BadShape> {
    let shape: Vec<usize> = text
        .split(',')
        .map(|v| v.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| BadShape(text.into()))?;
    let fits = (1..=7).contains(&shape.len()) && shape.iter().all(|n| (1..=32767).contains(n));
    fits.then_some(shape).ok_or_else(|| BadShape(text.into()))
}

/// Why phantoms could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot create {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start compression threads: {0}")]
    Compressor(std::io::Error),
    /// An image larger than this process may hold: refused before any
    /// allocation, which would abort the process.
    #[error("shape {shape:?}: {why}")]
    TooLarge { shape: Vec<usize>, why: String },
    /// A file of a phantom's name that is not a phantom: a user's image.
    #[error("{path} exists and is not a nismooth phantom (a user's image, or a run's output): generate replaces only its own (choose another folder)")]
    Exists { path: PathBuf },
    #[error("cannot write phantom {path}: {source}")]
    Write {
        path: PathBuf,
        source: io::WriteError,
    },
}

pub struct PhantomSpec {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub seed: u64,
    pub vary_size: bool,
    pub noise: NoiseChoice,
    pub format: OutputFormat,
}

/// SplitMix64: tiny, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Box–Muller; one normal per call keeps streams simple to reason about.
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a.wrapping_mul(0x100_0000_01B3) ^ b).next_u64()
}

/// Smooth 0→1 edge of width ~2 voxels around normalised radius 1.
fn inside(d: f64, scale: f64) -> f64 {
    1.0 / (1.0 + (-(1.0 - d) * scale).exp())
}

/// The noiseless intensity at normalised coordinates (u, v, w) in [-1, 1].
fn anatomy(u: f64, v: f64, w: f64, edge: f64) -> f64 {
    let r = |a: f64, b: f64, c: f64| ((u / a).powi(2) + (v / b).powi(2) + (w / c).powi(2)).sqrt();
    let head = inside(r(0.92, 0.95, 0.9), edge);
    let brain = inside(r(0.8, 0.85, 0.78), edge);
    let white = inside(r(0.55, 0.62, 0.5), edge);
    let vl = inside(((u + 0.12) / 0.08).hypot(v / 0.3).hypot(w / 0.15), edge);
    let vr = inside(((u - 0.12) / 0.08).hypot(v / 0.3).hypot(w / 0.15), edge);
    300.0 * head + 300.0 * brain + 200.0 * white - 600.0 * (vl + vr).min(1.0) * white
}

/// The shape of image `i`: `base`, or within ±50% of it per axis with `vary`.
pub fn image_shape(base: &[usize], seed: u64, i: usize, vary: bool) -> Vec<usize> {
    if !vary {
        return base.to_vec();
    }
    let mut rng = Rng::new(mix(seed, 0xA11CE + i as u64));
    base.iter()
        .enumerate()
        .map(|(a, &n)| {
            if a >= 3 {
                n
            } else {
                ((n as f64) * (0.5 + rng.uniform())).round().max(1.0) as usize
            }
        })
        .collect()
}

/// Voxels of phantom `i` (x fastest), in `dtype`.
pub fn phantom(shape: &[usize], dtype: DType, seed: u64, i: usize, noise: NoiseChoice) -> Voxels {
    let nx = shape[0];
    let ny = shape.get(1).copied().unwrap_or(1);
    let nz = shape.get(2).copied().unwrap_or(1);
    let nt: usize = shape.iter().skip(3).product();
    // Scale to the type: uint8 keeps under 255, integers are rounded.
    let gain = match dtype {
        DType::U8 | DType::I8 => 0.15,
        _ => 1.0,
    };
    let sigma_noise = 25.0;
    let edge = 0.5 * nx.min(ny).max(2) as f64 / 2.0;
    with_dtype!(dtype, T => {
        let mut data: Vec<T> = vec![<T as bytemuck::Zeroable>::zeroed(); nx * ny * nz * nt];
        data.par_chunks_mut(nx * ny).enumerate().for_each(|(slice, out)| {
            let (z, t) = (slice % nz, slice / nz);
            let mut rng = Rng::new(mix(mix(seed, i as u64), slice as u64));
            let w = 2.0 * (z as f64 + 0.5) / nz as f64 - 1.0;
            let drift = 1.0 + 0.01 * t as f64;
            for y in 0..ny {
                let v = 2.0 * (y as f64 + 0.5) / ny as f64 - 1.0;
                for x in 0..nx {
                    let u = 2.0 * (x as f64 + 0.5) / nx as f64 - 1.0;
                    let s = anatomy(u, v, w, edge) * drift;
                    let val = match noise {
                        NoiseChoice::Rician => {
                            let (a, b) = (rng.normal() * sigma_noise, rng.normal() * sigma_noise);
                            (s + a).hypot(b)
                        }
                        NoiseChoice::Gaussian => s + rng.normal() * sigma_noise,
                    };
                    let val = val * gain;
                    out[x + nx * y] = if dtype.is_float() { T::from_f64(val) } else { T::from_f64(val.round()) };
                }
            }
        });
        T::wrap(data)
    })
}

/// Refuses phantoms larger than this process may hold: the largest one
/// (each axis up to 1.5× with `vary_size`) twice, as voxels and as the
/// encoded file, must fit the memory room (cgroup, `ulimit -v`, the node).
fn check_room(spec: &PhantomSpec) -> Result<(), GenerateError> {
    let largest = spec
        .shape
        .iter()
        .map(|&n| if spec.vary_size { n + n / 2 } else { n } as u64)
        .try_fold(spec.dtype.size() as u64, |b, n| b.checked_mul(n));
    let need = largest.and_then(|b| b.checked_mul(2));
    let too_large = |why: String| GenerateError::TooLarge {
        shape: spec.shape.clone(),
        why,
    };
    let Some(need) = need else {
        return Err(too_large("its size overflows 64 bits".into()));
    };
    match crate::resources::memory_room() {
        Some(r) if need > r.bytes => Err(too_large(format!(
            "{} MiB to build and encode is more than {} allows ({} MiB left)",
            need >> 20,
            r.limit,
            r.bytes >> 20
        ))),
        _ => Ok(()),
    }
}

/// The description every phantom's header carries.
const PHANTOM_DESCRIP: &str = "nismooth phantom";

/// Whether `path` is a file this module wrote: its NIfTI-1 header (gzip or
/// not) says `PHANTOM_DESCRIP`. Anything else, unreadable included, is not.
fn is_phantom(path: &Path) -> bool {
    use std::io::{BufRead, BufReader, Read};
    // A FIFO or a device is never opened: no phantom, and a read would wait.
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut input = BufReader::new(file);
    let gz = input.fill_buf().is_ok_and(io::gzip::is_gzip);
    let mut head = [0u8; 348];
    let read = match gz {
        true => io::gzip::decoder(input).read_exact(&mut head),
        false => input.read_exact(&mut head),
    };
    // descrip: 80 bytes at offset 148.
    read.is_ok() && head[148..228].starts_with(PHANTOM_DESCRIP.as_bytes())
}

/// Writes `count` phantoms into `dir`, replacing only phantoms; returns
/// their paths.
pub fn generate(
    dir: &Path,
    count: usize,
    spec: &PhantomSpec,
) -> Result<Vec<PathBuf>, GenerateError> {
    let folder = |source| GenerateError::Folder {
        path: dir.to_path_buf(),
        source,
    };
    // A run's own state folder holds its journals and lock, never images.
    if dir
        .components()
        .any(|c| c.as_os_str() == crate::plan::STATE_DIR)
    {
        let why = "is inside a run's .nismooth folder (its journals and lock)";
        return Err(folder(std::io::Error::other(why)));
    }
    check_room(spec)?;
    let name = |i: usize| dir.join(format!("sub-{i:04}_T1w{}", spec.format.extension()));
    // Every name is checked before the first is written. A run's output
    // folder (it has a state folder) holds smoothed phantoms, whose headers
    // say phantom too: nothing there is generate's.
    // A `-r` run keeps its state folder at the top of OUTDIR only: any
    // folder above counts.
    let real = crate::plan::identity::resolve_future(dir);
    let outputs = real
        .ancestors()
        .any(|a| a.join(crate::plan::STATE_DIR).exists());
    let theirs = |p: &PathBuf| std::fs::symlink_metadata(p).is_ok() && (outputs || !is_phantom(p));
    if let Some(path) = (0..count).map(name).find(theirs) {
        return Err(GenerateError::Exists { path });
    }
    std::fs::create_dir_all(dir).map_err(folder)?;
    let mut paths = Vec::with_capacity(count);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let gz = io::gzip::Compressor::new(threads, 1).map_err(GenerateError::Compressor)?;
    for i in 0..count {
        let shape = image_shape(&spec.shape, spec.seed, i, spec.vary_size);
        let vox = phantom(&shape, spec.dtype, spec.seed, i, spec.noise);
        let mut pixdim = vec![1.0f32; shape.len()];
        if shape.len() > 3 {
            pixdim[3] = 2.0; // TR in seconds
        }
        let c = |a: usize| -((shape.get(a).copied().unwrap_or(1) as f32) - 1.0) / 2.0;
        let srow = [
            [1.0, 0.0, 0.0, c(0)],
            [0.0, 1.0, 0.0, c(1)],
            [0.0, 0.0, 1.0, c(2)],
        ];
        let header = io::new_header(&shape, spec.dtype, &pixdim, srow, PHANTOM_DESCRIP);
        let path = name(i);
        io::write_image(
            &path,
            &header,
            false,
            &vox,
            WriteOptions {
                format: spec.format,
                gzip: &gz,
                durable: true,
            },
        )
        .map_err(|source| GenerateError::Write {
            path: path.clone(),
            source,
        })?;
        paths.push(path);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phantoms_are_deterministic_and_seed_dependent() {
        let a = phantom(&[20, 18, 6], DType::F32, 1, 0, NoiseChoice::Rician);
        let b = phantom(&[20, 18, 6], DType::F32, 1, 0, NoiseChoice::Rician);
        let c = phantom(&[20, 18, 6], DType::F32, 2, 0, NoiseChoice::Rician);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn phantom_has_brain_brighter_than_background() {
        let Voxels::F32(v) = phantom(&[32, 32, 16], DType::F32, 3, 0, NoiseChoice::Gaussian) else {
            panic!()
        };
        let centre = v[16 + 32 * (16 + 32 * 8)];
        let corner = v[0];
        assert!(
            centre > 500.0 && corner.abs() < 150.0,
            "centre {centre} corner {corner}"
        );
    }

    #[test]
    fn vary_size_stays_within_half() {
        for i in 0..50 {
            let s = image_shape(&[100, 80, 60], 9, i, true);
            for (n, b) in s.iter().zip([100, 80, 60]) {
                assert!(*n >= b / 2 && *n <= b * 3 / 2, "{s:?}");
            }
        }
        assert_ne!(
            image_shape(&[100, 80, 60], 9, 0, true),
            image_shape(&[100, 80, 60], 9, 1, true)
        );
    }

    #[test]
    fn uint8_phantoms_fit_their_type() {
        let Voxels::U8(v) = phantom(&[32, 32, 16], DType::U8, 3, 0, NoiseChoice::Rician) else {
            panic!()
        };
        assert!(*v.iter().max().unwrap() < 255);
    }
}
