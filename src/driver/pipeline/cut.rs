//! How an image is cut into the parts that go through the stages: whole
//! volumes of a series, z-slabs of a large 3-D image, or all of it; and
//! what the pipeline holds of it at once.

use crate::config::RunConfig;
use crate::filter::slab::SlabPlan;
use crate::filter::{Compat, FilterSpec};
use crate::io;
use crate::volume::{DType, Shape};

/// Which part of its image a piece in flight is: a series is read,
/// filtered and written a few volumes at a time, so that memory follows the
/// volume, not the series. Every other image is one part.
#[derive(Clone, Copy, Debug)]
pub(super) struct Part {
    pub(super) index: usize,
    pub(super) last: bool,
    /// The whole image's shape (the writer's file holds all of it).
    pub(super) whole: Shape,
    /// A z-slab of a 3-D image: the filter keeps its z pass's ring.
    pub(super) slab: bool,
}

/// How an image is cut into parts: `voxels` at a time, whole volumes of a
/// series or whole z-slices of a large 3-D image (a slab), or all of it.
pub(super) struct Cut {
    pub(super) voxels: usize,
    pub(super) slab: bool,
}

impl Cut {
    /// A series in parts of about `resources::part_bytes()`; a 3-D image
    /// of 8 parts or more in slabs of that size where the backend and the
    /// filter allow it (`SlabPlan`); any other image whole.
    pub(super) fn of(
        stream: &io::ImageStream,
        spec: &FilterSpec,
        out: DType,
        cfg: &RunConfig,
        slabs: bool,
    ) -> Cut {
        let shape = stream.head().shape;
        let bytes = shape.len() as u64 * stream.dtype().size().max(out.size()) as u64;
        let part = crate::resources::part_bytes();
        if shape.volumes > 1 {
            let per = crate::resources::volumes_within(bytes, shape.volumes, part);
            return Cut {
                voxels: per * shape.volume_len(),
                slab: false,
            };
        }
        let slab = slabs
            && cfg.compat != Compat::Nilearn
            && bytes >= 8 * part
            && SlabPlan::new(shape, spec, stream.dtype(), out).is_some();
        if !slab {
            return Cut {
                voxels: shape.len(),
                slab: false,
            };
        }
        let slice = shape.spatial[0] * shape.spatial[1];
        let slices = crate::resources::volumes_within(bytes, shape.spatial[2], part);
        Cut {
            voxels: slices * slice,
            slab: true,
        }
    }

    /// The voxels of the image that the pipeline holds at once when it is
    /// cut so (at most all of them): a part in each stage and on its way
    /// back, its filtered copy and its output bytes, and a slab's z ring
    /// (2 × the z radius of slices). What the read reserves: a check of one
    /// part let a tight `ulimit -v` fail an allocation later, which aborts.
    pub(super) fn in_flight(&self, spec: &FilterSpec, whole: Shape, readers: usize) -> usize {
        let parts = crate::resources::pipeline_images(readers) + 2;
        let ring = match (self.slab, &spec.kernels(3)[2]) {
            (true, Some(k)) => 2 * k.radius() * whole.spatial[0] * whole.spatial[1],
            _ => 0,
        };
        self.voxels
            .saturating_mul(parts)
            .saturating_add(ring)
            .min(whole.len())
    }

    /// The shape of a part of `n` voxels of an image of shape `whole`.
    pub(super) fn shape_of(&self, whole: Shape, n: usize) -> Shape {
        if self.slab {
            let slice = (whole.spatial[0] * whole.spatial[1]).max(1);
            let mut spatial = whole.spatial;
            spatial[2] = n / slice;
            return Shape { spatial, ..whole };
        }
        Shape {
            volumes: n / whole.volume_len().max(1),
            ..whole
        }
    }
}

impl Part {
    pub(super) fn first() -> Part {
        Part {
            index: 0,
            last: false,
            whole: Shape {
                spatial: [0; 3],
                spatial_ndim: 0,
                volumes: 0,
            },
            slab: false,
        }
    }

    /// The only part of an image that is not read (skipped, failed, held).
    pub(super) fn only() -> Part {
        Part {
            last: true,
            ..Part::first()
        }
    }
}
