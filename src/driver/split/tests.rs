use super::*;

#[test]
fn shares_cover_the_data_once_on_chunks() {
    let c = CHUNK as u64;
    for (len, ranks) in [
        (10 * c, 3),
        (10 * c + 5, 4),
        (c / 2, 2),
        (3 * c / 2, 4),
        (0, 2),
        (7 * c, 7),
    ] {
        let runs = shares(len, ranks);
        assert_eq!(runs.len(), ranks);
        assert_eq!(runs[0].start, 0);
        assert_eq!(runs[ranks - 1].end, len);
        for w in runs.windows(2) {
            assert_eq!(w[0].end, w[1].start, "{len} over {ranks}");
        }
        for r in &runs {
            assert!(
                r.start % c == 0 && (r.end % c == 0 || r.end == len),
                "{r:?}"
            );
            assert!(r.end - r.start <= len.div_ceil(c).div_ceil(ranks as u64) * c);
        }
    }
}

#[test]
fn a_window_reads_its_run_the_halo_and_the_dictionary() {
    // 3-D, slices of 64 KiB float32 (16384 voxels), 100 slices, radius 8.
    let lay = Layout {
        unit: 16384,
        units: 100,
        halo: 8,
    };
    let c = CHUNK as u64;
    // A run of slices 16..32 with no dictionary: slices 8..40.
    assert_eq!(window(lay, 4, &(c..2 * c), 0).read, 8..40);
    // With 32 KiB before it: half a slice more, so slice 15 too.
    let w = window(lay, 4, &(c..2 * c), DICT);
    assert_eq!((w.read, w.kept_from), (7..40, c - DICT));
    // At the image's ends the halo stops there.
    assert_eq!(window(lay, 4, &(0..c), DICT).read, 0..24);
    assert_eq!(window(lay, 4, &(6 * c..100 * 65536), DICT).read, 87..100);
    // A series: whole volumes, no halo.
    let series = Layout {
        unit: 1000,
        units: 2000,
        halo: 0,
    };
    assert_eq!(window(series, 2, &(c..2 * c), DICT).read, 507..1049);
}

#[test]
fn a_shared_image_is_one_record_with_every_ranks_work() {
    let rec = |index, rank, voxels, t: f64| ImageRecord {
        rank,
        voxels,
        read_s: t,
        started_s: t,
        finished_s: 2.0 * t,
        ..blank_record(index)
    };
    let merged = merge(vec![
        rec(0, 0, 10, 1.0),
        rec(0, 1, 30, 3.0),
        rec(1, 0, 5, 1.0),
    ]);
    assert_eq!(merged.len(), 2);
    let m = &merged[0];
    assert_eq!(
        (m.rank, m.voxels, m.read_s, m.started_s, m.finished_s),
        (0, 40, 4.0, 1.0, 6.0)
    );
    assert_eq!(m.note.as_deref(), Some("shared by 2 ranks"));
    assert_eq!((merged[1].voxels, merged[1].note.as_deref()), (5, None));
}

fn blank_record(index: usize) -> ImageRecord {
    let task = Task {
        index,
        input: "a.nii".into(),
        output: "o/a.nii".into(),
    };
    blank(&task, 0)
}

/// Under `--deadline`, root's pace over the images shared so far: the
/// first starts whenever the deadline has not passed; a later one only
/// when the pace says it ends in time (it started images that ended after
/// the deadline when only `now >= deadline` was asked).
#[test]
fn the_pace_starts_no_image_that_would_end_after_the_deadline() {
    let mut pace = Pace::default();
    let now = crate::driver::stop::unix_now();
    assert!(pace.would_end(1 << 30) <= now + 1.0, "no pace yet: now");
    pace.add(1_000_000, 1.0);
    let end = pace.would_end(1_000_000);
    assert!(
        (end - now - 1.1).abs() < 0.5,
        "1 µs per voxel, 10% headroom: {}",
        end - now
    );
    assert!(
        pace.would_end(2_000_000) > end,
        "twice the voxels end later"
    );
}
