//! A workspace confines every path an agent names: generated paths — `..`
//! and `.`, absolute paths in and out, real symlinks pointing in, out, to `/`,
//! in loops and at nothing, Unicode look-alikes, NUL and overlong bytes,
//! trailing slashes — are each resolved against a real directory tree, and
//!
//! - a path whose target lies outside the root is refused,
//! - a path whose target lies inside is accepted, as exactly that target,
//! - and writing through whatever was accepted changes nothing outside the root.
//!
//! The expected target is worked out here the way the kernel follows a path,
//! one component at a time, dangling symlinks included (a write creates their
//! target), after Punie's own rule of applying the agent's `..` lexically.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::Config;
use punie::workspace::{Workspace, WorkspaceError};

/// Symlinks a path may pass through before the kernel gives up (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// A directory tree with the workspace `root` inside `base`, and symlinks
/// from the root to everywhere.
struct Tree {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    workspace: Workspace,
}

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let base = std::fs::canonicalize(dir.path()).expect("the directory exists");
        let root = base.join("root");
        for directory in ["outside/dir", "root/a/b", "root/a/empty", "root2"] {
            std::fs::create_dir_all(base.join(directory)).expect("a directory");
        }
        for (file, text) in [
            ("outside/secret.txt", "secret\n"),
            ("root/a/b/file.txt", "inside\n"),
            ("root2/x", "sibling\n"),
        ] {
            std::fs::write(base.join(file), text).expect("a file");
        }
        let links: [(&str, PathBuf); 19] = [
            ("root/in_rel", "a/b".into()),
            ("root/in_abs", root.join("a")),
            ("root/out_rel", "../outside".into()),
            ("root/out_abs", base.join("outside")),
            ("root/out_file", "../outside/secret.txt".into()),
            ("root/to_slash", "/".into()),
            ("root/self_loop", "self_loop".into()),
            ("root/loop_a", "loop_b".into()),
            ("root/loop_b", "loop_a".into()),
            ("root/dangling_in", "a/not-yet".into()),
            ("root/dangling_out", "../outside/not-yet".into()),
            (
                "root/dangling_out_deep",
                base.join("outside/new-dir/not-yet"),
            ),
            ("root/dangling_chain", "dangling_out".into()),
            ("root/chain", "out_rel".into()),
            ("root/sibling", "../root2".into()),
            ("root/back_in", "../outside/../root/a".into()),
            ("root/a/up", "..".into()),
            ("root/a/up_up", "../..".into()),
            (
                "root/a/b/dangling_via_up",
                "../up_up/../outside/not-yet".into(),
            ),
        ];
        for (link, target) in links {
            symlink(target, base.join(link)).expect("a symlink");
        }
        let workspace = Workspace::new(&root).expect("the root exists");
        Self {
            _dir: dir,
            base,
            root,
            workspace,
        }
    }

    /// Everything under `base` but the root, as it is now: each entry's kind
    /// and contents (a symlink's target), without following symlinks.
    fn outside(&self) -> BTreeMap<PathBuf, String> {
        let mut seen = BTreeMap::new();
        let mut pending = vec![self.base.clone()];
        while let Some(directory) = pending.pop() {
            for entry in std::fs::read_dir(&directory).expect("a readable directory") {
                let path = entry.expect("a directory entry").path();
                if path == self.root {
                    continue;
                }
                let kind = std::fs::symlink_metadata(&path).expect("metadata");
                let what = if kind.is_symlink() {
                    format!("link to {}", std::fs::read_link(&path).unwrap().display())
                } else if kind.is_dir() {
                    pending.push(path.clone());
                    "directory".to_owned()
                } else {
                    format!("file {:?}", std::fs::read(&path).unwrap())
                };
                seen.insert(path, what);
            }
        }
        seen
    }
}

/// `path` with `.` and `..` applied as text, the way Punie treats the path
/// an agent sends; `None` past `/`.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !normal.pop() || normal.as_os_str().is_empty() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    Some(normal)
}

/// Where the kernel lands when it opens or creates the absolute `path`,
/// following every symlink — dangling ones too, since a write creates their
/// target; `None` where it would fail: a loop, a file used as a directory,
/// `..` under something missing, a NUL.
fn landing(path: &Path) -> Option<PathBuf> {
    let mut pending: VecDeque<OsString> = components(path);
    let mut landed = PathBuf::from("/");
    let mut missing = false;
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        match name.as_bytes() {
            b"/" => landed = PathBuf::from("/"),
            b"" | b"." => {}
            b".." if missing => return None,
            b".." => {
                landed.pop();
            }
            _ if missing => landed.push(&name),
            _ => {
                let next = landed.join(&name);
                match std::fs::symlink_metadata(&next) {
                    Ok(kind) if kind.is_symlink() => {
                        hops += 1;
                        if hops > MAX_SYMLINKS {
                            return None;
                        }
                        let target = std::fs::read_link(&next).ok()?;
                        for part in components(&target).into_iter().rev() {
                            pending.push_front(part);
                        }
                    }
                    Ok(kind) => {
                        if !kind.is_dir() && !pending.is_empty() {
                            return None;
                        }
                        landed = next;
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        missing = true;
                        landed = next;
                    }
                    Err(_) => return None,
                }
            }
        }
    }
    Some(landed)
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .map(|component| match component {
            Component::RootDir => OsString::from("/"),
            other => other.as_os_str().to_owned(),
        })
        .collect()
}

/// Names a path is made of: real entries, symlinks of every kind, dots, and
/// names that only look like dots or separators.
fn name() -> impl Strategy<Value = OsString> {
    const NAMES: &[&[u8]] = &[
        b"a",
        b"b",
        b"file.txt",
        b"empty",
        b"not-yet",
        b"new",
        b"outside",
        b"secret.txt",
        b"root",
        b"root2",
        b"in_rel",
        b"in_abs",
        b"out_rel",
        b"out_abs",
        b"out_file",
        b"to_slash",
        b"self_loop",
        b"loop_a",
        b"dangling_in",
        b"dangling_out",
        b"dangling_out_deep",
        b"dangling_chain",
        b"chain",
        b"sibling",
        b"back_in",
        b"up",
        b"up_up",
        b"dangling_via_up",
        b"..",
        b"..",
        b"..",
        b".",
        b"",
        "\u{FF0E}\u{FF0E}".as_bytes(),
        "\u{2024}\u{2024}".as_bytes(),
        "..\u{200F}".as_bytes(),
        "\u{202E}..".as_bytes(),
        ".\u{0301}.".as_bytes(),
        "..\u{0338}".as_bytes(),
        "\u{2215}etc".as_bytes(),
        "a\u{0}b".as_bytes(),
        b"\0",
        b"\xC0\xAE\xC0\xAE",
        b"\xE0\x80\xAE",
        b"\xC0\xAF",
        b"%2e%2e",
        b"..\\..",
        b"...",
        b" ..",
        b".. ",
    ];
    prop_oneof![
        8 => prop::sample::select(NAMES).prop_map(|name| OsStr::from_bytes(name).to_owned()),
        1 => "[a-z.]{1,4}".prop_map(OsString::from),
    ]
}

/// Where a generated path starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// Relative to the root.
    Root,
    /// The root's absolute path.
    RootAbsolute,
    /// The directory holding the root.
    Base,
    /// The filesystem's root.
    Slash,
}

fn path_in(tree: &Tree, start: Start, names: &[OsString], trailing: bool) -> PathBuf {
    let mut path = match start {
        Start::Root => PathBuf::new(),
        Start::RootAbsolute => tree.root.clone(),
        Start::Base => tree.base.clone(),
        Start::Slash => PathBuf::from("/"),
    }
    .into_os_string();
    for name in names {
        if !path.is_empty() && !path.as_bytes().ends_with(b"/") {
            path.push("/");
        }
        path.push(name);
    }
    if trailing {
        path.push("/");
    }
    PathBuf::from(path)
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        6 => Just(Start::Root),
        2 => Just(Start::RootAbsolute),
        1 => Just(Start::Base),
        1 => Just(Start::Slash),
    ]
}

/// Resolve `path` in a fresh tree, check the answer against where the kernel
/// would land, then write through it and check that nothing outside changed.
fn check(start: Start, names: &[OsString], trailing: bool) -> Result<(), TestCaseError> {
    let tree = Tree::new();
    let path = path_in(&tree, start, names, trailing);
    let before = tree.outside();
    let resolved = tree.workspace.resolve(&path);
    // Climbing past `/` stays at `/`, as the kernel does: outside the root.
    let expected =
        lexical(&tree.root.join(&path)).map_or(Some(PathBuf::from("/")), |p| landing(&p));
    // The trailing `/` went with the normalising; the kernel refuses one
    // after anything that is there and is not a directory.
    let expected = expected.filter(|target| {
        !(trailing && std::fs::metadata(target).is_ok_and(|metadata| !metadata.is_dir()))
    });
    match (&expected, &resolved) {
        (Some(target), Ok(resolved)) if target.starts_with(&tree.root) => {
            prop_assert_eq!(resolved, target, "{:?} resolves to its target", path);
        }
        (Some(target), Ok(resolved)) => {
            prop_assert!(
                false,
                "{:?} lands at {:?}, outside the root, but was accepted as {:?}",
                path,
                target,
                resolved
            );
        }
        (Some(target), Err(error)) if target.starts_with(&tree.root) => {
            prop_assert!(
                false,
                "{:?} lands at {:?}, inside the root, but was refused: {}",
                path,
                target,
                error
            );
        }
        (Some(_), Err(error)) => {
            prop_assert!(
                matches!(error, WorkspaceError::Outside { .. }),
                "{:?} is refused as outside the workspace, not with: {}",
                path,
                error
            );
        }
        (None, Ok(resolved)) => {
            prop_assert!(
                false,
                "{:?} cannot be opened, but was accepted as {:?}",
                path,
                resolved
            );
        }
        (None, Err(_)) => {}
    }

    if let Ok(resolved) = &resolved {
        prop_assert!(resolved.starts_with(&tree.root));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let written = runtime.block_on(tree.workspace.write_text(&path, "written\n"));
        if written.is_ok() {
            let read = runtime
                .block_on(tree.workspace.read_text(&path, None, None))
                .ok();
            prop_assert_eq!(read.as_deref(), Some("written\n"));
            let on_disk = std::fs::read_to_string(resolved).ok();
            prop_assert_eq!(
                on_disk.as_deref(),
                Some("written\n"),
                "the write landed where the path resolved"
            );
        }
    }
    prop_assert_eq!(
        tree.outside(),
        before,
        "nothing outside the root changed after {:?}",
        path
    );
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        // Each case builds its own tree of real files: 512 keep the ordinary
        // run short; PROPTEST_CASES asks for more.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(512),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn every_path_is_confined_to_the_root(
        start in start(),
        names in prop::collection::vec(name(), 0..6),
        trailing in any::<bool>(),
    ) {
        check(start, &names, trailing)?;
    }
}

fn names(names: &[&str]) -> Vec<OsString> {
    names.iter().map(OsString::from).collect()
}

/// `file.txt/` names a directory: the kernel refuses it for a file, here
/// reached through a relative symlink.
#[test]
fn a_file_named_with_a_trailing_slash_is_refused_as_the_kernel_does() {
    check(Start::Root, &names(&["in_rel", "file.txt"]), true).unwrap();
    let tree = Tree::new();
    assert!(
        tree.workspace
            .resolve(Path::new("in_rel/file.txt/"))
            .is_err()
    );
    assert!(tree.workspace.resolve(Path::new("in_rel/file.txt")).is_ok());
}

#[test]
fn a_dangling_symlink_that_points_out_is_refused_and_nothing_is_written_outside() {
    for path in [
        &["dangling_out"][..],
        &["dangling_chain"],
        &["dangling_out_deep"],
        &["a", "b", "dangling_via_up"],
    ] {
        check(Start::Root, &names(path), false).unwrap();
    }
    let tree = Tree::new();
    assert!(matches!(
        tree.workspace.resolve(Path::new("dangling_out")),
        Err(WorkspaceError::Outside { .. })
    ));
}

#[test]
fn a_dangling_symlink_that_points_in_resolves_to_its_target() {
    let tree = Tree::new();
    assert_eq!(
        tree.workspace.resolve(Path::new("dangling_in")).unwrap(),
        tree.root.join("a/not-yet")
    );
    check(Start::Root, &names(&["dangling_in"]), false).unwrap();
}

#[test]
fn look_alikes_of_dots_are_ordinary_names_inside() {
    let tree = Tree::new();
    for name in [
        "\u{FF0E}\u{FF0E}",
        "..\u{200F}",
        ".\u{0301}.",
        "%2e%2e",
        "...",
        "..\\..",
    ] {
        assert_eq!(
            tree.workspace.resolve(Path::new(name)).unwrap(),
            tree.root.join(name),
            "{name:?}"
        );
    }
    let overlong = Path::new(OsStr::from_bytes(b"\xC0\xAE\xC0\xAE/x"));
    assert_eq!(
        tree.workspace.resolve(overlong).unwrap(),
        tree.root.join(overlong)
    );
    assert!(tree.workspace.resolve(Path::new("a\0b")).is_err(), "NUL");
}

#[test]
fn symlinks_that_loop_are_refused() {
    let tree = Tree::new();
    for path in ["self_loop", "loop_a/x", "self_loop/x", "chain/../self_loop"] {
        assert!(tree.workspace.resolve(Path::new(path)).is_err(), "{path}");
    }
}
