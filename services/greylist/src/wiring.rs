//! The greylist as `mailfleet run greylist` runs it: the whitelist files
//! loaded and watched, the settings recorded, and an edited whitelist
//! file recorded as new settings.

use std::{sync::Arc, time::Duration};

use mailfleet_runtime::{RuntimeError, Wiring};

use crate::{settings_of, whitelist::WhitelistFiles, Greylist, GreylistConfig};

/// Build the greylist consumer; a live run records its settings, and
/// records them again whenever a whitelist file changes.
pub async fn build(cfg: &GreylistConfig, wiring: &Wiring) -> Result<Greylist, RuntimeError> {
    let lists = WhitelistFiles::load(
        cfg.whitelist_clients.clone(),
        cfg.whitelist_recipients.clone(),
    )
    .map_err(|e| RuntimeError::InvalidConfig(vec![e.to_string()]))?;
    lists.watch(Duration::from_secs(cfg.whitelist_reload_s));
    let greylist = Greylist::new(cfg.clone(), lists.clone(), wiring.first_output());
    if wiring.produce {
        let settings = greylist.settings().map_err(|e| wiring.invalid(e))?;
        wiring.record_settings(&settings).await?;
        tokio::spawn(watch(cfg.clone(), lists, wiring.clone(), settings.hash));
    }
    Ok(greylist)
}

/// An edited whitelist file is new settings: recorded in the log, and in
/// force from there, like any other change.
async fn watch(cfg: GreylistConfig, lists: Arc<WhitelistFiles>, wiring: Wiring, recorded: String) {
    let every = Duration::from_secs(cfg.whitelist_reload_s);
    let mut last = recorded;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = wiring.shutdown.wait() => return,
        }
        let settings = match settings_of(&cfg, &lists) {
            Ok(s) if s.hash != last => s,
            Ok(_) => continue,
            Err(e) => {
                tracing::error!(error = %e, "greylist settings not recorded");
                continue;
            }
        };
        match wiring.publish_settings(&settings).await {
            Ok(()) => last = settings.hash,
            Err(e) => tracing::error!(error = %e, "greylist settings not recorded; retrying"),
        }
    }
}
