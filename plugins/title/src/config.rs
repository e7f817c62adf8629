//! The title matcher's configuration table (`[[matchers]] kind = "title"` in plexsync.toml):
//! its keys, their defaults and their validation.

use plexsync_plugin_api::PluginError;
use serde::Deserialize;

/// Config keys of the title matcher. Every key is optional; unknown keys are refused so a
/// typo is reported instead of silently ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TitleConfig {
    /// Confidence a best candidate needs for a `Definite` answer (0..=1). The host auto-maps
    /// at 0.90; a lower value here would only produce definite answers the host ignores.
    pub definite_threshold: f32,
    /// How far the best show must lead the runner-up (another show) for a `Definite` answer.
    pub min_margin: f32,
    /// Year distance still considered "the same year" (first-air dates differ by a year
    /// between Plex agents and trackers). Each year within it costs a little; one year
    /// beyond costs 0.15, farther costs 0.30 and more.
    pub year_tolerance: u32,
    /// Shows whose title similarity (pg_trgm on the normalised names) less the year and
    /// qualifier penalties is below this are not reported as candidates.
    pub min_candidate_score: f32,
    /// At most this many candidates are returned (best first, one per show).
    pub max_candidates: usize,
    /// Whether a query without any year (Plex reports none, the title names none) may be
    /// auto-mapped at all. It is weaker evidence either way: it costs 0.06 confidence.
    pub allow_without_year: bool,
}

impl Default for TitleConfig {
    fn default() -> Self {
        TitleConfig {
            definite_threshold: 0.90,
            min_margin: 0.10,
            year_tolerance: 1,
            min_candidate_score: 0.30,
            max_candidates: 5,
            allow_without_year: true,
        }
    }
}

impl TitleConfig {
    /// Parse the plugin's table (an absent table means all defaults) and check the ranges.
    pub fn from_value(value: &serde_json::Value) -> Result<TitleConfig, PluginError> {
        // A wrong type or an unknown key names its key path (plugin API).
        let cfg: TitleConfig = plexsync_plugin_api::parse_config(value)?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), PluginError> {
        let unit = |name: &str, v: f32| {
            if v.is_finite() && (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(PluginError::config(format!("must be between 0 and 1, got {v}")).with_key(name))
            }
        };
        unit("definite_threshold", self.definite_threshold)?;
        unit("min_margin", self.min_margin)?;
        unit("min_candidate_score", self.min_candidate_score)?;
        if self.year_tolerance > 10 {
            return Err(PluginError::config(format!(
                "must be at most 10, got {}",
                self.year_tolerance
            ))
            .with_key("year_tolerance"));
        }
        if !(1..=100).contains(&self.max_candidates) {
            return Err(PluginError::config(format!(
                "must be between 1 and 100, got {}",
                self.max_candidates
            ))
            .with_key("max_candidates"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexsync_plugin_api::ErrorClass;

    #[test]
    fn defaults_when_absent_or_empty() {
        let d = TitleConfig::default();
        assert_eq!(
            TitleConfig::from_value(&serde_json::Value::Null).unwrap(),
            d
        );
        assert_eq!(TitleConfig::from_value(&serde_json::json!({})).unwrap(), d);
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_config_errors() {
        for (v, key) in [
            (serde_json::json!({"year_tolerence": 1}), "year_tolerence"),
            (serde_json::json!({"min_margin": 2.0}), "min_margin"),
            (serde_json::json!({"max_candidates": 0}), "max_candidates"),
            (serde_json::json!({"year_tolerance": "1"}), "year_tolerance"),
            (serde_json::json!({"year_tolerance": 11}), "year_tolerance"),
        ] {
            let e = TitleConfig::from_value(&v).unwrap_err();
            assert_eq!(e.class, ErrorClass::Config, "{v}");
            assert_eq!(e.key.as_deref(), Some(key), "{v}: {e}");
        }
    }
}
