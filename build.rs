//! Compiles the one C file: nibabel's qform matrix in `long double`
//! (src/io/qform.c says why).

fn main() {
    println!("cargo:rerun-if-changed=src/io/qform.c");
    cc::Build::new()
        .file("src/io/qform.c")
        .opt_level(2)
        .compile("nismooth_qform");
}
