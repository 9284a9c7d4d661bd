//! The help's examples and workflows: what a first-time user copies. Kept
//! here, beside no option, so that `cli.rs` stays the list of options; each
//! text is attached to its command there (`after_help`), and the snapshot
//! tests (tests/cmd/) show every change to them in review.

/// `nismooth --help`: the workflows and the exit codes.
pub const TOP: &str = "\
Workflows:
  Smooth a folder, see what it cost:
    nismooth run /data/T1w -o /scratch/smoothed --sigma 2 --report run.json
    nismooth report run.json
  Plan a big job on a cluster: measure, predict, submit:
    nismooth study -o study --ranks 1,2,4 --tasks 4,16 --data /data/T1w
    nismooth estimate --from study/study.json --tasks 40000 --nodes 4 --ntasks-per-node 8 --sbatch job.sh -- /data/T1w -o /scratch/out
    sbatch job.sh
  Many independent images, no MPI: a job array (each task takes its share):
    nismooth sbatch --model array --array-tasks 100 -- /data/T1w -o /scratch/out > array.sh
  MPI ranks across nodes (rank 0 plans, every rank filters its share):
    srun --mpi=pmix -N 2 -n 8 -c 4 nismooth run /data/T1w -o /scratch/out
  A BIDS dataset into a derivatives dataset (FWHM in mm, nilearn's rules):
    nismooth bids /data/ds000001 /data/ds000001/derivatives/nismooth participant --fwhm 6 --compat nilearn

Output: results (the summary table, `report`, `estimate`) on standard output;
logs and progress on standard error (-q: warnings and errors only; -v, -vv:
more; without either, RUST_LOG is honoured).

Exit codes:
  0  every image done
  1  some image failed (each named in the log and the report; the others are done)
  2  refused before any work (bad option, missing input, unsafe output folder)
  3  stopped early (a drain signal or the deadline): run again with --resume to finish
  4  the images were done, but the report, CSV or BIDS metadata after them could not be written

Terms in the tables:
  wtime/ptime         wall time over the sum of read + filter + write times (below 1: stages overlapped;
                      above 1: time outside them, such as start-up, MPI and syncs)
  CPU efficiency      CPU time over wall time × the CPUs the process was given
  load imbalance      the busiest rank's work over the mean rank's (1 = perfectly even)
  parallel efficiency the ranks' busy time over ranks × wall time";

/// `nismooth run --help`.
pub const RUN: &str = "\
Examples:
  nismooth run /data/T1w -o /scratch/smoothed                    # σ = 2 voxels, as scipy.ndimage.gaussian_filter(img, 2)
  nismooth run -r /data/study -o /scratch/out --fwhm 6 --compat nilearn   # a tree, nilearn.image.smooth_img(img, 6)
  find /data -name '*_bold.nii.gz' | nismooth run --list - -o /scratch/out --sigma 2,2,2
  mpirun -n 4 nismooth run /data/T1w -o /scratch/out --report run-%j.json --resume";

/// `nismooth bids --help`.
pub const BIDS: &str = "\
Examples:
  nismooth bids /data/ds /data/ds/derivatives/nismooth participant --fwhm 6 --compat nilearn
  nismooth bids /data/ds /out participant --participant-label 01 02 --datatype func --suffix bold --fwhm 5
  nismooth sbatch --model array --array-tasks 20 -- bids /data/ds /out participant --fwhm 6 > job.sh";

/// `nismooth generate --help`.
pub const GENERATE: &str = "\
Examples:
  nismooth generate -o sample -n 8 --shape 91,109,91 --dtype int16     # MNI-sized phantoms
  nismooth generate -o series -n 2 --shape 64,64,36,120               # 4-D series";

/// `nismooth report --help`.
pub const REPORT: &str = "\
Examples:
  nismooth report run.json                       # the summary table again
  nismooth report run.json --mem-request 4G      # and whether 4G per rank was too much
  nismooth report --job 123456                   # sacct's accounting beside nismooth's own
  nismooth report merge out/.nismooth/*.jsonl -o merged.json --csv merged.csv";

/// `nismooth status --help`.
pub const STATUS: &str = "\
It only reads: no lock is taken, nothing is written, and a refresh reads only
what the journals gained. A rank is `stalled` when it has written nothing for
ten times its median image (at least a minute), `gone` when its process is no
longer alive on this host; either makes the run `not finished`.

Exit codes: 0 the run finished (every image written or skipped), 1 it ended
with failed images, 3 it stopped early (--resume finishes it), 5 it is still
running, 6 it did not finish (a rank gone or stalled), 2 no run or unreadable
journals.

Examples:
  nismooth status /scratch/out                   # done, failed, rate, ETA, each rank
  nismooth status /scratch/out --watch 10        # refreshed every 10 s until the run ends
  nismooth status /scratch/out --json | jq .eta_s";

/// `nismooth sbatch --help`.
pub const SBATCH: &str = "\
Examples:
  nismooth sbatch --model threads -- /data/T1w -o /scratch/out > job.sh
  nismooth sbatch --model array --array-tasks 100 --array-limit 20 -- /data/T1w -o /scratch/out
  nismooth sbatch --model mpi --nodes 4 --ntasks-per-node 16 --time 02:00:00 --requeue -- /data/T1w -o /scratch/out
  nismooth sbatch --model gpu --gpus-per-node 4 --partition gpu -- /data/T1w -o /scratch/out";

/// `nismooth study --help`.
pub const STUDY: &str = "\
Examples:
  nismooth study -o study                                        # generated images, ranks 1,2
  nismooth study -o study --data /data/T1w --ranks 1,2,4 --threads 1,2 --tasks 4,16 --reps 3
  nismooth study -o study --launcher srun -- --compression-level 6     # inside an allocation";

/// `nismooth estimate --help`.
pub const ESTIMATE: &str = "\
Examples:
  nismooth estimate --from study/study.json --tasks 40000 --ranks 8
  nismooth estimate --from study/study.json --tasks 40000 --nodes 4 --ntasks-per-node 8 --node-memory 256G \\
      --sbatch job.sh -- /data/T1w -o /scratch/out";

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::cli::Cli;

    /// Every example's `nismooth …` command parses: a renamed or removed
    /// flag breaks this test before it breaks a user's first command.
    #[test]
    fn every_example_parses() {
        let texts = [
            super::TOP,
            super::RUN,
            super::BIDS,
            super::GENERATE,
            super::REPORT,
            super::SBATCH,
            super::STUDY,
            super::ESTIMATE,
        ];
        let mut seen = 0;
        for text in texts {
            for line in text.replace("\\\n", " ").lines() {
                let Some(at) = line.find("nismooth ") else {
                    continue;
                };
                let command = &line[at..];
                let command = command.split(" #").next().unwrap();
                let command = command.split(" > ").next().unwrap();
                let words: Vec<&str> = command.split_whitespace().collect();
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("{command}\n{e}");
                }
                seen += 1;
            }
        }
        assert!(seen >= 20, "only {seen} examples found");
    }
}
