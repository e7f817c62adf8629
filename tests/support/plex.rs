//! A fake Plex Media Server: XML answers in the shapes of real PMS responses (see
//! ../shared/plex-samples), built from the project's own fixture values. It checks the
//! `X-Plex-Token` header and answers 401 with PMS's HTML body otherwise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{FakeServer, Seen, respond};

pub const TOKEN: &str = "fake-plex-token-123";

/// One show the fake knows: its ratingKey, guid, title, year and `<Guid>` ids.
#[derive(Debug, Clone)]
pub struct FakeShow {
    pub rating_key: String,
    pub guid: String,
    pub title: String,
    pub year: i32,
    pub guids: Vec<String>,
}

#[derive(Default)]
pub struct PlexState {
    pub shows: HashMap<String, FakeShow>,
    pub requests: Vec<Seen>,
    /// Answer every request with this status (401, 500, …) when set.
    pub fail_with: Option<u16>,
}

pub struct FakePlex {
    pub server: Arc<FakeServer>,
    pub state: Arc<Mutex<PlexState>>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

impl FakePlex {
    pub async fn start(shows: Vec<FakeShow>) -> FakePlex {
        let state = Arc::new(Mutex::new(PlexState {
            shows: shows
                .into_iter()
                .map(|s| (s.rating_key.clone(), s))
                .collect(),
            ..Default::default()
        }));
        let st = state.clone();
        let server = FakeServer::start(Arc::new(move |seen: Seen| {
            let st = st.clone();
            Box::pin(async move { handle(&st, seen) })
        }))
        .await;
        FakePlex { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn metadata_requests(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path.starts_with("/library/metadata/"))
            .count()
    }
}

const UNAUTHORIZED: &str =
    "<html><head><title>Unauthorized</title></head><body><h1>401 Unauthorized</h1></body></html>";

fn handle(
    st: &Mutex<PlexState>,
    seen: Seen,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut s = st.lock().unwrap();
    s.requests.push(seen.clone());
    if let Some(code) = s.fail_with {
        return respond(
            code,
            "text/html",
            format!("<html><head><title>{code}</title></head><body><h1>{code}</h1></body></html>"),
        );
    }
    if seen.header("x-plex-token") != Some(TOKEN) {
        return respond(401, "text/html", UNAUTHORIZED);
    }
    if let Some(rk) = seen.path.strip_prefix("/library/metadata/") {
        let Some(show) = s.shows.get(rk) else {
            return respond(
                404,
                "text/html",
                "<html><head><title>Not Found</title></head><body><h1>404 Not Found</h1></body></html>",
            );
        };
        let guids: String = show
            .guids
            .iter()
            .map(|g| format!("<Guid id=\"{}\" />", esc(g)))
            .collect();
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"1\" allowSync=\"1\" identifier=\"com.plexapp.plugins.library\" librarySectionID=\"2\" librarySectionTitle=\"TV Shows\" mediaTagPrefix=\"/system/bundle/media/flags/\">\n<Directory ratingKey=\"{rk}\" key=\"/library/metadata/{rk}/children\" guid=\"{}\" type=\"show\" title=\"{}\" index=\"1\" year=\"{}\" leafCount=\"10\" viewedLeafCount=\"1\" childCount=\"1\">{guids}</Directory>\n</MediaContainer>\n",
            esc(&show.guid),
            esc(&show.title),
            show.year
        );
        return respond(200, "text/xml;charset=utf-8", xml);
    }
    if seen.path == "/identity" {
        return respond(
            200,
            "text/xml;charset=utf-8",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"0\" claimed=\"1\" machineIdentifier=\"fakeplexmachine0000000000000000000000000\" version=\"1.40.0.0000-000000000\"> </MediaContainer>\n",
        );
    }
    respond(
        404,
        "text/html",
        "<html><head><title>Not Found</title></head><body><h1>404 Not Found</h1></body></html>",
    )
}
