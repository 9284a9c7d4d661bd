//! What an image's header decides before its parts go through the
//! stages: its record, its filter and output dtype, and the lines the log
//! says once (the kernel, an integer output of --fwhm).

use super::*;

/// Fills the image's record from its header and decides its filter and
/// output dtype, once for all its parts.
pub(in crate::driver) fn describe<'a>(
    rec: &mut ImageRecord,
    stream: io::ImageStream<'a>,
    cfg: &RunConfig,
) -> Result<(io::ImageStream<'a>, FilterSpec, DType), String> {
    let head = stream.head();
    if head.dropped_extensions {
        log::warn!(
            "{}: its header extensions have invalid sizes; the output is written without them",
            rec.input
        );
        rec.note = Some("invalid header extensions dropped".into());
    }
    rec.bytes_in = head.bytes_in;
    rec.voxels = head.shape.len() as u64;
    rec.shape = head.shape.spatial[..head.shape.spatial_ndim].to_vec();
    if head.shape.volumes > 1 {
        rec.shape.push(head.shape.volumes);
    }
    let dtype_in = stream.dtype();
    rec.dtype_in = Some(dtype_in.to_string());
    let out = cfg.output_dtype(dtype_in);
    rec.dtype_out = Some(out.to_string());
    let spec = cfg.image_spec(head)?;
    tell_the_kernel_once(&spec, head, cfg, &rec.input);
    warn_of_integer_fwhm_once(cfg, dtype_in, out);
    Ok((stream, spec, out))
}

/// Logs the kernel the first time an image of each voxel size comes, so
/// that a σ typed where a FWHM was meant (or mm for voxels) shows.
fn tell_the_kernel_once(spec: &FilterSpec, head: &Image, cfg: &RunConfig, input: &str) {
    static SEEN: Mutex<Vec<[u64; 3]>> = Mutex::new(Vec::new());
    let mm: [f64; 3] = match cfg.compat {
        Compat::Nilearn => head.voxel_sizes,
        _ => head.pixdim,
    };
    let key = mm.map(f64::to_bits);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen.contains(&key) {
        return;
    }
    seen.push(key);
    let ndim = head.shape.spatial_ndim;
    let size: Vec<String> = mm[..ndim.clamp(1, 3)]
        .iter()
        .map(|m| format!("{}", (m.abs() * 1000.0).round() / 1000.0))
        .collect();
    let series = if head.shape.volumes > 1 {
        "; a series is smoothed volume by volume"
    } else {
        ""
    };
    log::info!(
        "kernel for {} mm voxels (first: {input}): {}{series}",
        size.join(" × "),
        spec.describe(ndim, mm)
    );
}

/// `--fwhm` (or σ in mm) on integer data keeps the integer type, as
/// scipy's filter does; a nilearn user expects float32: said once.
fn warn_of_integer_fwhm_once(cfg: &RunConfig, dtype_in: DType, out: DType) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let in_mm = cfg.units != crate::filter::Units::Voxel;
    if !in_mm || cfg.compat == Compat::Nilearn || out.is_float() {
        return;
    }
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::warn!(
            "{dtype_in} data smoothed into {out}: each output value is truncated toward zero, as \
             scipy.ndimage.gaussian_filter does; --dtype float32 keeps the fractions, and \
             --compat nilearn smooths as nilearn's smooth_img (float32 out)"
        );
    }
}
