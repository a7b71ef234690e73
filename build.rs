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
    let order = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("link")
        .join("client-functions.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    if order.is_file() && linker_takes_an_ordering_file() {
        // The functions the clients run (`punie ask`, the stdio bridge), side
        // by side at the start of the code. A client's memory is mostly the
        // pages of the binary it touches, and the kernel maps 64 KiB around
        // each page it first touches: spread over the whole of `.text`, the
        // 1.6 MB of code `ask` runs made it map 5.7 MiB of the binary.
        // Names the list has but the build lacks (after a change of code or
        // of a dependency) are skipped in silence; `scripts/client-order`
        // writes the list again.
        // `-Xlinker` hands the path over whole, commas and all.
        for arg in ordering_args(&order) {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}

/// The linker arguments that hand `list` to the linker.
fn ordering_args(list: &Path) -> [String; 4] {
    [
        "-Xlinker".to_owned(),
        format!("--symbol-ordering-file={}", list.display()),
        "-Xlinker".to_owned(),
        "--no-warn-symbol-ordering".to_owned(),
    ]
}

/// True when the linker this build's binaries get (LLD, Rust's default on
/// x86_64 Linux, but not GNU ld, which distributions' compilers may use)
/// takes a symbol ordering file: a program is linked with an empty one, the
/// way the binary will be.
fn linker_takes_an_ordering_file() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let out_dir = Path::new(&std::env::var_os("OUT_DIR").unwrap_or_default()).to_owned();
    let source = out_dir.join("order_probe.rs");
    let list = out_dir.join("order_probe.txt");
    if std::fs::write(&source, "fn main() {}\n").is_err() || std::fs::write(&list, "").is_err() {
        return false;
    }
    let mut rustc = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    rustc
        .arg(&source)
        .arg("-o")
        .arg(out_dir.join("order_probe"))
        .args(["--target", &var("TARGET")]);
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        rustc
            .arg("-C")
            .arg(format!("linker={}", linker.to_string_lossy()));
    }
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    rustc.args(flags.split('\u{1f}').filter(|flag| !flag.is_empty()));
    for arg in ordering_args(&list) {
        rustc.arg("-C").arg(format!("link-arg={arg}"));
    }
    rustc.output().is_ok_and(|output| output.status.success())
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
