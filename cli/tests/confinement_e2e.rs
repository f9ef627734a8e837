//! Confinement without races, through real `read` and `write` ops of a
//! `volley run`: while they run, the directory they name and a symlink to a
//! directory outside the root trade places (`RENAME_EXCHANGE`) in a loop.
//! No read returns the outside file, no write lands outside.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{batch_file, volley};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_in_while_ops_run_never_lets_them_out() {
    let base = tempfile::tempdir().expect("temp dir");
    let root = base.path().join("root");
    let outside = base.path().join("outside");
    std::fs::create_dir_all(root.join("inside")).expect("inside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::write(root.join("inside/file.txt"), "inside").expect("write");
    std::fs::write(outside.join("file.txt"), "SECRET").expect("write");
    std::os::unix::fs::symlink(&outside, root.join("evil")).expect("symlink");
    let mut text = String::from("name: swapped\nmax_parallel: 8\nops:\n");
    for index in 0..300 {
        text.push_str(&format!(
            "  - {{id: r{index}, kind: read, attempts: 1, args: {{path: inside/file.txt}}}}\n  - {{id: w{index}, kind: write, attempts: 1, args: {{path: inside/w{index}.txt, content: x}}}}\n"
        ));
    }
    let file = batch_file(base.path(), "swapped.yaml", &text);
    let swapping = Arc::new(AtomicBool::new(true));
    let swapper = {
        let swapping = swapping.clone();
        let root = root.clone();
        std::thread::spawn(move || {
            let directory = std::fs::File::open(&root).expect("open the root");
            let mut swaps = 0_u64;
            while swapping.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    &directory,
                    "inside",
                    &directory,
                    "evil",
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .expect("exchange");
                swaps += 1;
            }
            swaps
        })
    };
    let output = volley()
        .args(["run", file.to_str().expect("utf-8"), "--output", "json"])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("volley run");
    swapping.store(false, Ordering::Relaxed);
    let swaps = swapper.join().expect("swapper");
    assert!(swaps > 10, "the swapper ran");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    for op in report["ops"].as_array().expect("ops") {
        assert_ne!(op["output"], "SECRET", "a read escaped the root: {op}");
    }
    let escaped: Vec<_> = std::fs::read_dir(&outside)
        .expect("read outside")
        .flatten()
        .map(|entry| entry.file_name())
        .filter(|name| name != "file.txt")
        .collect();
    assert!(escaped.is_empty(), "writes escaped the root: {escaped:?}");
}
