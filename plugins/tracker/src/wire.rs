//! The tracker API's JSON shapes, owned here rather than borrowed from the plugin contract so a
//! change to a contract type can never silently change what goes over the wire, plus the
//! unix-seconds → RFC 3339 formatter for `watched_at`.
//!
//! Response shapes ignore fields they do not know, so a tracker can add fields without
//! breaking older plexsync releases; request shapes are exact.

use plexsync_plugin_api::ExportReceipt;
use serde::{Deserialize, Deserializer, Serialize};

/// Body of `POST {url}/shows/{id}/watched`.
#[derive(Debug, Serialize)]
pub(crate) struct WatchedRequest {
    pub episodes: Vec<WatchedEpisode>,
}

#[derive(Debug, Serialize)]
pub(crate) struct WatchedEpisode {
    pub season: u32,
    pub episode: u32,
    /// RFC 3339, UTC, whole seconds: `2023-09-13T07:20:33Z`.
    pub watched_at: String,
}

/// Answer to `POST {url}/shows/{id}/watched`. `watched_episodes` and `total_episodes` are
/// informational and not needed by the receipt, so they are not parsed.
#[derive(Debug, Deserialize)]
pub(crate) struct WatchedResponse {
    // `marked` and `already_watched` are required: a 200 without them is not an answer from
    // this endpoint (a proxy page, a wrong `url`), and must not count as delivered.
    marked: u64,
    already_watched: u64,
    #[serde(default)]
    unknown: Option<Vec<EpisodeRef>>,
}

#[derive(Debug, Deserialize)]
struct EpisodeRef {
    season: u32,
    episode: u32,
}

impl From<WatchedResponse> for ExportReceipt {
    fn from(r: WatchedResponse) -> Self {
        ExportReceipt {
            marked: r.marked,
            already_watched: r.already_watched,
            unknown: r
                .unknown
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.season, e.episode))
                .collect(),
            rate_limit: None,
        }
    }
}

/// Body of `POST {url}/shows`. Absent values are sent as `null` so every key is always there.
#[derive(Debug, Serialize)]
pub(crate) struct CreateShowRequest<'a> {
    pub title: &'a str,
    pub year: Option<i32>,
    pub tmdb_id: Option<u64>,
    pub tvdb_id: Option<u64>,
    pub imdb_id: Option<&'a str>,
}

/// Answer to `POST {url}/shows`.
#[derive(Debug, Deserialize)]
pub(crate) struct CreatedShow {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
}

/// Tracker ids may be JSON strings or numbers; numbers are kept as their decimal text, the
/// same rule the catalogue uses, so a created show's id matches its catalogue row.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(serde_json::Number),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Format unix seconds as RFC 3339 in UTC (`YYYY-MM-DDTHH:MM:SSZ`).
///
/// Returns `None` outside the years 0000–9999, which RFC 3339 cannot express; every `i64`
/// is accepted without panicking or overflowing.
pub(crate) fn format_rfc3339(unix_secs: i64) -> Option<String> {
    // Euclidean division keeps the time of day in 0..DAY for instants before 1970.
    let days = unix_secs.div_euclid(DAY);
    let secs_of_day = unix_secs.rem_euclid(DAY);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60
    ))
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01, after Howard
/// Hinnant's `civil_from_days`. `days` is at most `i64::MAX / 86400` in magnitude here, so
/// none of the i64 arithmetic below can overflow.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so the leap day is the last day of the (March-based) year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097); // 400-year eras
    let doe = z.rem_euclid(146_097); // day of era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of March-based year, 0..=365
    let mp = (5 * doy + 2) / 153; // March = 0 … February = 11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // `month` is 1..=12 and `day` 1..=31 by construction; the casts cannot truncate.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (1_694_589_633, "2023-09-13T07:20:33Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (951_782_400, "2000-02-29T00:00:00Z"), // divisible by 400: leap
            (951_868_800, "2000-03-01T00:00:00Z"),
            (-2_203_977_600, "1900-02-28T00:00:00Z"), // divisible by 100: not leap
            (-2_203_891_200, "1900-03-01T00:00:00Z"),
            (1_709_251_199, "2024-02-29T23:59:59Z"),
            (1_709_251_200, "2024-03-01T00:00:00Z"),
            (1_735_689_599, "2024-12-31T23:59:59Z"), // day 366 of a leap year
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (-62_167_219_200, "0000-01-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ];
        for (secs, want) in cases {
            assert_eq!(format_rfc3339(secs).as_deref(), Some(want), "{secs}");
        }
    }

    #[test]
    fn out_of_range_and_extreme_inputs_are_none_not_panics() {
        for secs in [
            -62_167_219_201,
            253_402_300_800,
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            i64::MAX - 1,
            -(1 << 40),
            1 << 40,
        ] {
            assert_eq!(format_rfc3339(secs), None, "{secs}");
        }
    }

    /// Walk every day from 0000-01-01 to 9999-12-31 with a naive calendar and compare.
    #[test]
    fn every_day_of_years_0000_to_9999_matches_a_naive_calendar() {
        fn is_leap(y: i64) -> bool {
            (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
        }
        fn month_len(y: i64, m: u32) -> u32 {
            match m {
                2 if is_leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            }
        }
        let (mut y, mut m, mut d) = (0i64, 1u32, 1u32);
        let first = -62_167_219_200 / DAY;
        let last = 253_402_300_799 / DAY;
        for days in first..=last {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            d += 1;
            if d > month_len(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        assert_eq!((y, m, d), (10_000, 1, 1));
    }

    #[test]
    fn receipt_parses_and_ignores_extra_fields() {
        let r: WatchedResponse = serde_json::from_str(
            r#"{"marked": 2, "already_watched": 1, "unknown": [{"season": 9, "episode": 1}],
                "watched_episodes": 10, "total_episodes": 20, "future": true}"#,
        )
        .unwrap();
        let r = ExportReceipt::from(r);
        assert_eq!((r.marked, r.already_watched), (2, 1));
        assert_eq!(r.unknown, vec![(9, 1)]);

        let r: WatchedResponse =
            serde_json::from_str(r#"{"marked": 0, "already_watched": 0, "unknown": null}"#)
                .unwrap();
        assert!(ExportReceipt::from(r).unknown.is_empty());

        assert!(serde_json::from_str::<WatchedResponse>(r#"{"ok": true}"#).is_err());
        assert!(
            serde_json::from_str::<WatchedResponse>(r#"{"marked": -1, "already_watched": 0}"#)
                .is_err()
        );
    }

    #[test]
    fn created_show_id_may_be_string_or_number() {
        let s: CreatedShow = serde_json::from_str(r#"{"id": 42, "title": "x"}"#).unwrap();
        assert_eq!(s.id, "42");
        let s: CreatedShow = serde_json::from_str(r#"{"id": "abc-1"}"#).unwrap();
        assert_eq!(s.id, "abc-1");
        assert!(serde_json::from_str::<CreatedShow>(r#"{"id": null}"#).is_err());
        assert!(serde_json::from_str::<CreatedShow>(r#"{}"#).is_err());
    }

    #[test]
    fn create_request_always_has_every_key() {
        let body = serde_json::to_value(CreateShowRequest {
            title: "Aria",
            year: None,
            tmdb_id: Some(1),
            tvdb_id: None,
            imdb_id: None,
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"title": "Aria", "year": null, "tmdb_id": 1, "tvdb_id": null, "imdb_id": null})
        );
    }
}
