//! Where a Telegram repository lives: the part of a repository spec after
//! `telegram:`, parsed and printed.

/// Where the repository's messages live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    SavedMessages,
    Channel {
        id: i64,
        access_hash: i64,
    },
    /// A channel known by id only; its access hash comes from the session,
    /// or from the account's dialogs.
    ChannelId(i64),
    /// A public channel or user name, resolved on first use.
    Username(String),
    /// A channel with this title, created by [`Backend::create`].
    NewChannel(String),
}

impl Target {
    /// Parses what follows `telegram:` in a repository spec: `me`,
    /// `@username`, `-100<channel id>` or `new:Title` (the title may be in
    /// double quotes).
    pub fn parse(spec: &str) -> std::result::Result<Target, String> {
        let bad = |why: &str| format!("`telegram:{spec}`: {why}");
        if spec == "me" {
            return Ok(Target::SavedMessages);
        }
        if let Some(name) = spec.strip_prefix('@') {
            let ok = (4..=32).contains(&name.len())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && name.as_bytes()[0].is_ascii_alphabetic();
            return if ok { Ok(Target::Username(name.to_string())) } else { Err(bad("not a Telegram username")) };
        }
        if let Some(digits) = spec.strip_prefix("-100") {
            return match digits.parse::<i64>() {
                Ok(id) if id > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(Target::ChannelId(id)),
                _ => Err(bad("a channel id is -100 followed by digits")),
            };
        }
        if let Some(title) = spec.strip_prefix("new:") {
            let title = title.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(title).trim();
            if title.is_empty() || title.chars().count() > 128 {
                return Err(bad("a channel title has 1 to 128 characters"));
            }
            return Ok(Target::NewChannel(title.to_string()));
        }
        Err(bad("expected `me`, `@username`, `-100…` (a channel id) or `new:\"Title\"`"))
    }

    /// The repository spec (after `telegram:`) naming this target.
    pub fn spec(&self) -> String {
        match self {
            Target::SavedMessages => "me".into(),
            Target::Channel { id, .. } | Target::ChannelId(id) => format!("-100{id}"),
            Target::Username(u) => format!("@{u}"),
            Target::NewChannel(title) => format!("new:{title:?}"),
        }
    }
}
