//! `plexsync settings`: the effective configuration and which secrets are stored, as
//! `GET /api/settings` answers it (the daemon's, or the same handler in process).

use anyhow::Result;

use super::table::cell;
use super::{Admin, outln, print_json};
use plexsync::api::{SettingSource, SettingsView};

pub async fn settings(a: &Admin, as_json: bool) -> Result<()> {
    let s: SettingsView = a.get("settings").await?;
    if as_json {
        return print_json(&s);
    }
    outln!("config file: {}", s.config_file);
    outln!();
    let width = s
        .settings
        .iter()
        .map(|v| unicode_width::UnicodeWidthStr::width(v.key.as_str()))
        .max()
        .unwrap_or(0)
        .min(48);
    for v in &s.settings {
        let value = if v.hidden {
            "(hidden: may hold a secret)".to_string()
        } else {
            match &v.value {
                serde_json::Value::Null => "(not set)".to_string(),
                other => other.to_string(),
            }
        };
        let from = match v.source {
            SettingSource::Default => "  (default)",
            SettingSource::File => "",
        };
        let pending = match &v.after_restart {
            Some(file) => format!("  (the file says {file}: after a restart)"),
            None => String::new(),
        };
        outln!("{} {value}{from}{pending}", cell(&v.key, width));
    }
    outln!();
    outln!("secrets (values are never shown):");
    for sec in &s.secrets {
        outln!(
            "{} {} {}",
            cell(&sec.name, 15),
            cell(if sec.set { "set" } else { "NOT set" }, 8),
            sec.command
        );
    }
    outln!();
    outln!(
        "Settings change in {} (then `systemctl reload plexsync`, or restart the daemon).",
        s.config_file
    );
    Ok(())
}
