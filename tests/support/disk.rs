//! A real file system that fills up or turns read-only under a running
//! server: a tmpfs over a test home's data directory.

use std::path::PathBuf;

use super::Home;

/// A small tmpfs mounted over a home's data directory for one test: a real
/// file system that fills up and can be made read-only. Mounting takes root:
/// the tests run as root (as on CI) or through `sudo -n`.
pub struct Disk {
    pub dir: PathBuf,
    /// The home it is in, removed once it is unmounted: while mounted, the
    /// home's own cleanup cannot remove it.
    home: PathBuf,
}

/// Run `command` as root, to its end; whether it succeeded.
fn as_root(command: &[&str]) -> bool {
    let mut run = if rustix::process::geteuid().is_root() {
        std::process::Command::new(command[0])
    } else {
        let mut sudo = std::process::Command::new("sudo");
        sudo.args(["-n", command[0]]);
        sudo
    };
    run.args(&command[1..])
        .status()
        .is_ok_and(|status| status.success())
}

impl Disk {
    pub fn mount(home: &Home, size: &str) -> Self {
        let dir = home
            .database()
            .parent()
            .expect("a data directory")
            .to_owned();
        std::fs::create_dir_all(&dir).expect("the mount point");
        // Owned by whoever runs the test, as the directory it covers was.
        let options = format!(
            "size={size},mode=0755,uid={},gid={}",
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw()
        );
        let dir_text = dir.to_str().expect("a UTF-8 temporary path");
        assert!(
            as_root(&["mount", "-t", "tmpfs", "-o", &options, "tmpfs", dir_text]),
            "a tmpfs can be mounted on {dir_text} (it takes root, or sudo without a password)"
        );
        Self {
            dir,
            home: home.dir.path().to_owned(),
        }
    }

    pub fn remount(&self, read_only: bool) {
        let how = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let dir = self.dir.to_str().expect("a UTF-8 temporary path");
        assert!(as_root(&["mount", "-o", how, dir]), "{how} {dir}");
    }

    /// Write a file until the disk refuses: no room is left for anyone.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).expect("the filler file");
        let block = vec![0_u8; 4096];
        loop {
            match file.write_all(&block) {
                Ok(()) => {}
                Err(error) if error.raw_os_error() == Some(nix::libc::ENOSPC) => return path,
                Err(error) => panic!("filling the disk: {error}"),
            }
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        // Detached (lazy), so that a server still holding files does not keep it.
        if let Some(dir) = self.dir.to_str()
            && as_root(&["umount", "--lazy", dir])
        {
            let _ = std::fs::remove_dir_all(&self.home);
        }
    }
}
