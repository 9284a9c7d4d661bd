//! Compiles the one C file: nibabel's qform matrix in `long double`
//! (src/io/header/qform.c says why). For the wheel's build through zig
//! (scripts/build_wheel.sh), which searches no system folder for libraries,
//! it also names the folder where ISA-L's `libisal.so` is.

fn main() {
    println!("cargo:rerun-if-changed=src/io/header/qform.c");
    cc::Build::new()
        .file("src/io/header/qform.c")
        .opt_level(2)
        .compile("nismooth_qform");
    println!("cargo:rerun-if-env-changed=NISMOOTH_ISAL_LIBDIR");
    if let Some(dir) = std::env::var_os("NISMOOTH_ISAL_LIBDIR") {
        println!("cargo:rustc-link-search=native={}", dir.to_string_lossy());
    }
}
