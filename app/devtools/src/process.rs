//! Stopping a child process the way systemd does: SIGTERM, then SIGKILL
//! once its time is up.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

/// SIGTERM `child` and wait for it to exit; past `within`, SIGKILL it.
/// `Ok(true)` when it stopped by itself, `Ok(false)` when it was killed.
pub(crate) fn terminate(child: &mut Child, within: Duration) -> std::io::Result<bool> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + within;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}
