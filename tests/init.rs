//! `punie init`: registers this binary with JetBrains IDEs and Zed without
//! losing anything else in their files.

mod support;

use std::process::Output;

use serde_json::{Value, json};
use support::{Home, text, within};

async fn punie(home: &Home, args: &[&str]) -> Output {
    within("punie init", home.command().args(args).output())
        .await
        .expect("punie runs")
}

/// The path the tests run punie by, which `punie init` records.
fn this_binary() -> String {
    std::path::absolute(env!("CARGO_BIN_EXE_punie"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn init_adds_punie_to_the_jetbrains_file_in_the_home_directory() {
    let home = Home::new();
    let output = punie(&home, &["init"]).await;
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = home.dir.path().join(".jetbrains/acp.json");
    assert_eq!(
        read_json(&file),
        json!({"agent_servers": {"Punie": {"command": this_binary(), "args": [], "env": {}}}})
    );
}

#[tokio::test]
async fn init_keeps_every_other_key_and_agent_and_twice_changes_nothing() {
    let home = Home::new();
    let file = home.dir.path().join("custom/acp.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let before = json!({
        "agent_servers": {
            "Other": {"command": "/usr/bin/other", "args": ["--flag"], "env": {"A": "1"}},
            "Punie": {"command": "/old/punie", "args": ["old"], "env": {}}
        },
        "default_mcp_settings": {"x": true}
    });
    std::fs::write(&file, before.to_string()).unwrap();

    let output = punie(&home, &["init", "--output", file.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(0));
    let after = read_json(&file);
    assert_eq!(
        after["agent_servers"]["Other"],
        before["agent_servers"]["Other"]
    );
    assert_eq!(
        after["default_mcp_settings"],
        before["default_mcp_settings"]
    );
    assert_eq!(
        after["agent_servers"]["Punie"],
        json!({"command": this_binary(), "args": ["old"], "env": {}})
    );
    let keys: Vec<&String> = after.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["agent_servers", "default_mcp_settings"],
        "key order kept"
    );

    let bytes = std::fs::read(&file).unwrap();
    let again = punie(&home, &["init", "--output", file.to_str().unwrap()]).await;
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already"));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "running it twice changes nothing"
    );
}

#[tokio::test]
async fn init_updates_punies_entry_keeping_the_persons_settings_and_the_files_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = Home::new();
    let file = home.dir.path().join("acp.json");
    let before = json!({"agent_servers": {"Punie": {
        "command": "/old/punie",
        "args": ["--log-file", "/tmp/punie.log"],
        "env": {"PUNIE_SERVER": "wss://punie.example.com/acp"},
        "note": "mine"
    }}});
    std::fs::write(&file, before.to_string()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();

    let output = punie(&home, &["init", "--output", file.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("Updated"), "not `Added`: {stderr}");
    let mut expected = before["agent_servers"]["Punie"].clone();
    expected["command"] = json!(this_binary());
    assert_eq!(read_json(&file)["agent_servers"]["Punie"], expected);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the file keeps its mode: {mode:o}");
}

#[tokio::test]
async fn an_unreadable_file_is_backed_up_and_reported_not_overwritten_silently() {
    let home = Home::new();
    let file = home.dir.path().join("acp.json");
    std::fs::write(&file, "{ this is: not json").unwrap();
    let output = punie(&home, &["init", "--output", file.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(0));
    let backup = home.dir.path().join("acp.json.bak");
    assert_eq!(
        std::fs::read_to_string(&backup).unwrap(),
        "{ this is: not json"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("acp.json.bak"), "{stderr}");
    assert_eq!(
        read_json(&file)["agent_servers"]["Punie"]["command"],
        this_binary()
    );
}

#[tokio::test]
async fn a_backup_is_as_private_as_the_file_it_keeps() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = Home::new();
    for (name, mode) in [("private.json", 0o600), ("shared.json", 0o640)] {
        let file = home.dir.path().join(name);
        // Not a map of agents, so it is backed up; its `env` holds a key.
        std::fs::write(&file, r#"{"agent_servers": [{"env": {"KEY": "sk-1"}}]}"#).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        let output = punie(&home, &["init", "--output", file.to_str().unwrap()]).await;
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        let backup = home.dir.path().join(format!("{name}.bak"));
        let kept = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(kept, mode, "{name}.bak has the mode of {name}: {kept:o}");
    }
}

#[tokio::test]
async fn a_symlinked_file_stays_a_link_and_the_file_it_leads_to_gets_punie() {
    use std::os::unix::fs::{PermissionsExt as _, symlink};
    let home = Home::new();
    // A dotfile manager's layout: ~/.jetbrains/acp.json leads, through a
    // second link, to the file it keeps.
    let dotfiles = home.dir.path().join("dotfiles");
    std::fs::create_dir_all(&dotfiles).unwrap();
    let real = dotfiles.join("acp.json");
    let before = json!({
        "agent_servers": {"Other": {"command": "/usr/bin/other", "args": [], "env": {}}},
        "default_mcp_settings": {"x": true}
    });
    std::fs::write(&real, before.to_string()).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    symlink("acp.json", dotfiles.join("current.json")).unwrap();
    let link = home.dir.path().join(".jetbrains/acp.json");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    symlink("../dotfiles/current.json", &link).unwrap();

    let output = punie(&home, &["init"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    for (path, leads_to) in [
        (&link, "../dotfiles/current.json"),
        (&dotfiles.join("current.json"), "acp.json"),
    ] {
        assert_eq!(
            std::fs::read_link(path).unwrap(),
            std::path::Path::new(leads_to),
            "{} is still a link",
            path.display()
        );
    }
    let after = read_json(&real);
    assert_eq!(
        after["agent_servers"]["Other"],
        before["agent_servers"]["Other"]
    );
    assert_eq!(
        after["default_mcp_settings"],
        before["default_mcp_settings"]
    );
    assert_eq!(after["agent_servers"]["Punie"]["command"], this_binary());
    let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the file keeps its mode: {mode:o}");
    let strays: Vec<_> = std::fs::read_dir(&dotfiles)
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name != "acp.json" && name != "current.json")
        .collect();
    assert!(strays.is_empty(), "no temporary file is left: {strays:?}");
}

#[tokio::test]
async fn a_link_to_a_missing_file_gets_the_file_unless_its_directory_is_missing() {
    use std::os::unix::fs::symlink;
    let home = Home::new();
    let link = home.dir.path().join("acp.json");
    symlink("dotfiles/acp.json", &link).unwrap();

    let output = punie(&home, &["init", "--output", link.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("symbolic link") && stderr.contains("dotfiles does not exist"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        !home.dir.path().join("dotfiles").exists(),
        "nothing is created"
    );

    std::fs::create_dir(home.dir.path().join("dotfiles")).unwrap();
    let output = punie(&home, &["init", "--output", link.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        read_json(&home.dir.path().join("dotfiles/acp.json"))["agent_servers"]["Punie"]["command"],
        this_binary()
    );
}

#[tokio::test]
async fn init_zed_prints_a_custom_agent_server_entry() {
    let home = Home::new();
    let output = punie(&home, &["init", "--zed"]).await;
    assert_eq!(output.status.code(), Some(0));
    let entry: Value = serde_json::from_slice(&output.stdout).expect("the entry is JSON");
    assert_eq!(
        entry,
        json!({"agent_servers": {"Punie": {"type": "custom", "command": this_binary(), "args": [], "env": {}}}})
    );
    // What it says to do with the entry fits what it printed: the whole
    // object merges into the settings.
    let advice = String::from_utf8_lossy(&output.stderr);
    assert!(
        advice.contains("Merge this into Zed's settings.json"),
        "{advice}"
    );
    assert!(
        !home.dir.path().join(".jetbrains").exists(),
        "--zed writes nothing"
    );
}

#[tokio::test]
async fn init_records_the_link_it_was_run_by_not_the_versioned_file_behind_it() {
    use std::os::unix::fs::symlink;
    let home = Home::new();
    // ~/bin/punie → the installed, versioned binary.
    let bin = home.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("punie");
    symlink(env!("CARGO_BIN_EXE_punie"), &link).unwrap();
    let file = home.dir.path().join("acp.json");
    let recorded = |output: &Output| {
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
        read_json(&file)["agent_servers"]["Punie"]["command"].clone()
    };

    // Run by its path.
    let mut command = home.command();
    command.arg0(&link);
    let output = within(
        "punie init",
        command
            .args(["init", "--output", file.to_str().unwrap()])
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(recorded(&output), json!(link));
    std::fs::remove_file(&file).unwrap();

    // Run by its name, found on PATH.
    let mut command = home.command();
    command.arg0("punie");
    let output = within(
        "punie init",
        command
            .env("PATH", &bin)
            .args(["init", "--output", file.to_str().unwrap()])
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(recorded(&output), json!(link));
    std::fs::remove_file(&file).unwrap();

    // A name that leads to another program is not this one.
    let mut command = home.command();
    command.arg0("/bin/sh");
    let output = within(
        "punie init",
        command
            .args(["init", "--output", file.to_str().unwrap()])
            .output(),
    )
    .await
    .unwrap();
    let real = std::fs::canonicalize(env!("CARGO_BIN_EXE_punie")).unwrap();
    assert_eq!(recorded(&output), json!(real));
}
