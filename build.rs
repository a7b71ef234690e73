//! Link settings for the `punie` binary; nothing here generates code.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if packed_relocations_work() {
        // Packed relative relocations (DT_RELR): at every start the dynamic
        // loader reads a few KiB of relocation records instead of half a MiB.
        // Every client process pays for those pages, and `punie ask` must
        // stay small.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// True when this machine's C toolchain links a program with packed
/// relocations and that program runs: it needs GNU ld 2.38 (or lld) and
/// glibc 2.36, and an older one either ignores the option with a warning or
/// links a program the loader refuses.
fn packed_relocations_work() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let native = var("HOST") == var("TARGET");
    if !native || var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return false;
    }
    let out_dir = var("OUT_DIR");
    let source = Path::new(&out_dir).join("relr_probe.c");
    let program = Path::new(&out_dir).join("relr_probe");
    // A pointer in static data makes the linker emit a relative relocation.
    let code =
        "static const char *greeting = \"hi\";\nint main(void) { return greeting[0] != 'h'; }\n";
    if std::fs::write(&source, code).is_err() {
        return false;
    }
    let linked = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_owned()))
        .arg(&source)
        .arg("-o")
        .arg(&program)
        .args([
            "-pie",
            "-fPIE",
            "-Wl,-z,pack-relative-relocs",
            "-Wl,--fatal-warnings",
        ])
        .output()
        .is_ok_and(|output| output.status.success());
    linked
        && Command::new(&program)
            .status()
            .is_ok_and(|status| status.success())
}
