//! Who the server is and who is on it: `GET /identity`, the root `GET /` (the server's
//! `friendlyName`) and `GET /accounts` (PLEX_PROTOCOL §5). Parsers are pure functions over the element tree; the client methods
//! map transport and shape errors to [`PlexError`].

use super::xml::Element;
use super::{PlexClient, PlexError};

/// `GET /identity`.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The server's id; equals a webhook's `Server.uuid`.
    pub machine_identifier: String,
    /// PMS version, e.g. `1.29.1.6316-f4cdfea9c`.
    pub version: Option<String>,
    /// `claimed="1"`: the server is signed in to a plex.tv account. Absent → false.
    pub claimed: bool,
}

/// One `<Account>` of `GET /accounts`: the ids history rows call `accountID`.
///
/// The list is returned as the server sends it, **including the system account `id="0"`**
/// (empty name), which never watches anything: callers that present or select accounts
/// ignore it (see [`PlexAccount::is_system`]). `1` is the owner; managed and shared users have
/// large ids.
#[derive(Debug, Clone, PartialEq)]
pub struct PlexAccount {
    pub id: i64,
    /// The account's name; empty for the system account.
    pub name: String,
}

impl PlexAccount {
    /// The system account (`id="0"`), present on every server.
    pub fn is_system(&self) -> bool {
        self.id == 0
    }
}

/// The identity in a `/identity` container; None without a `machineIdentifier`.
pub fn parse_identity(root: &Element) -> Option<Identity> {
    Some(Identity {
        machine_identifier: root.attr_nonempty("machineIdentifier")?.to_string(),
        version: root.attr_nonempty("version").map(str::to_string),
        claimed: root.attr_bool("claimed").unwrap_or(false),
    })
}

/// The server's name in the root (`GET /`) container: `friendlyName`, the name people gave
/// the server (the webhook's `Server.title`). None when absent or blank.
pub fn parse_friendly_name(root: &Element) -> Option<String> {
    root.attr_nonempty("friendlyName")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// The accounts in an `/accounts` container; `<Account>` elements without a usable `id` are
/// left out.
pub fn parse_accounts(root: &Element) -> Vec<PlexAccount> {
    root.children_named("Account")
        .filter_map(|a| {
            Some(PlexAccount {
                id: a.attr_int("id")?,
                name: a.attr("name").unwrap_or("").trim().to_string(),
            })
        })
        .collect()
}

impl PlexClient {
    /// `GET /identity` (PMS needs no token for it; the client sends its token anyway).
    pub async fn identity(&self) -> Result<Identity, PlexError> {
        let endpoint = "/identity";
        let root = self.get_container(endpoint, &[], None).await?;
        parse_identity(&root).ok_or_else(|| PlexError::Malformed {
            endpoint: endpoint.into(),
            message: "no machineIdentifier on MediaContainer".into(),
        })
    }

    /// `GET /` (needs the token): the server's `friendlyName`, None if it has none.
    pub async fn friendly_name(&self) -> Result<Option<String>, PlexError> {
        let root = self.get_container("/", &[], None).await?;
        Ok(parse_friendly_name(&root))
    }

    /// `GET /accounts`, including the system account `0` (see [`PlexAccount`]).
    pub async fn accounts(&self) -> Result<Vec<PlexAccount>, PlexError> {
        let root = self.get_container("/accounts", &[], None).await?;
        Ok(parse_accounts(&root))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_samples::sample;
    use super::super::xml::parse;
    use super::*;

    #[test]
    fn real_identity() {
        let Some(text) = sample("server/identity_xml_plexopedia-excerpt.xml") else {
            return;
        };
        let id = parse_identity(&parse(&text).unwrap()).unwrap();
        assert_eq!(
            id,
            Identity {
                machine_identifier: "6a646027a56abb6dbdf72484564db8567c737430".into(),
                version: Some("1.29.1.6316-f4cdfea9c".into()),
                claimed: true,
            }
        );
    }

    #[test]
    fn real_accounts_keep_the_system_account() {
        let Some(ha) = sample("server/accounts_xml_ha.xml") else {
            return;
        };
        let a = parse_accounts(&parse(&ha).unwrap());
        let ids: Vec<i64> = a.iter().map(|a| a.id).collect();
        assert_eq!(ids, vec![0, 1, 1000, 1001]);
        assert!(a[0].is_system() && a[0].name.is_empty());
        assert_eq!(a[1].name, "User 1");

        let Some(pop) = sample("server/accounts_xml_plexopedia-excerpt.xml") else {
            return;
        };
        let a = parse_accounts(&parse(&pop).unwrap());
        assert_eq!(
            a,
            vec![
                PlexAccount {
                    id: 0,
                    name: String::new()
                },
                PlexAccount {
                    id: 1,
                    name: "PlexUser".into()
                },
                PlexAccount {
                    id: 3972737,
                    name: "Kids".into()
                },
            ]
        );
        assert_eq!(a.iter().filter(|a| !a.is_system()).count(), 2);
    }

    #[test]
    fn friendly_name_of_the_root_container() {
        let x = r#"<MediaContainer size="25" friendlyName=" Living room " machineIdentifier="ab" version="1.40"><Directory count="1" key="library" title="library"/></MediaContainer>"#;
        assert_eq!(
            parse_friendly_name(&parse(x).unwrap()).as_deref(),
            Some("Living room")
        );
        let x = r#"<MediaContainer size="0" friendlyName="  " machineIdentifier="ab"/>"#;
        assert_eq!(parse_friendly_name(&parse(x).unwrap()), None);
        assert_eq!(
            parse_friendly_name(&parse("<MediaContainer/>").unwrap()),
            None
        );
    }

    #[test]
    fn identity_and_accounts_leniently() {
        let x = r#"<MediaContainer size="0" machineIdentifier=" abc " claimed="0"/>"#;
        let id = parse_identity(&parse(x).unwrap()).unwrap();
        assert_eq!(
            (id.machine_identifier.as_str(), id.version, id.claimed),
            ("abc", None, false)
        );
        assert!(
            parse_identity(&parse(r#"<MediaContainer machineIdentifier=""/>"#).unwrap()).is_none()
        );
        let x = r#"<MediaContainer><Account id="x" name="bad"/><Account name="no id"/><Account id=" 7 " name="Seven"/><Directory id="9"/></MediaContainer>"#;
        let a = parse_accounts(&parse(x).unwrap());
        assert_eq!(
            a,
            vec![PlexAccount {
                id: 7,
                name: "Seven".into()
            }]
        );
    }
}
