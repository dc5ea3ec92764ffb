//! What the manual page says beyond the command line definition: the
//! environment variables, the exit statuses and examples. `cargo xtask dist`
//! renders them into `tstor.1` as the ENVIRONMENT, EXIT STATUS and EXAMPLES
//! sections; the README's tables say the same.

use super::exit;

/// Environment variables tstor reads, with what each does.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    ("TSTOR_REPOSITORY", "The repository, as --repo takes it (a path, local:PATH or telegram:...)."),
    ("TSTOR_PASSWORD", "The repository password."),
    ("TSTOR_PASSWORD_FILE", "A file whose first line is the password (--password-file)."),
    ("TSTOR_PASSWORD_COMMAND", "A shell command whose first output line is the password (--password-command)."),
    ("TSTOR_NEW_PASSWORD", "The new password for key add and key passwd."),
    ("TSTOR_CACHE_DIR", "The local cache directory (--cache-dir)."),
    ("TSTOR_CONFIG", "The configuration file (--config)."),
    ("TSTOR_PROFILE", "The profile of the configuration file to use (--profile)."),
    ("TSTOR_LOG", "Log filter for stderr and --log-file, e.g. debug or tstor=trace; overrides -v."),
    ("NO_COLOR", "When set and not empty, logs on a terminal are not coloured either."),
    ("TSTOR_LOCK_STALE_SECS", "Seconds after which an unrefreshed lock counts as stale (default 1800)."),
    ("TSTOR_TG_SESSION", "The Telegram session file."),
    ("TSTOR_TG_API_ID, TSTOR_TG_API_HASH", "Telegram API credentials, from https://my.telegram.org (login needs both)."),
    ("TSTOR_TG_BOT_TOKEN", "Log in as a bot (login --bot-token)."),
    (
        "TSTOR_TG_UNREACHABLE_TIMEOUT",
        "Seconds a command keeps retrying while Telegram cannot be reached before it exits with status 14 (default 300).",
    ),
    ("TSTOR_TG_MAX_FLOOD_WAIT", "Longest Telegram flood wait sat out, in seconds (default 600)."),
    ("TSTOR_TG_PACK_MIB", "Data pack size for Telegram repositories, 1 to 512 MiB (default 64)."),
    ("TSTOR_TG_PARTS_IN_FLIGHT", "Upload parts in flight across all packs, at most one per transfer connection (default 8)."),
    ("TSTOR_TG_CALLS_PER_MINUTE", "Budget that paces every Telegram API call; 0 for none (default 3000)."),
    ("TSTOR_TG_TRANSFER_CONNECTIONS", "Extra connections for uploads and downloads, 0 to 16, one upload part at a time on each (default 8)."),
];

/// Exit statuses and what each means.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (0, "Success."),
    (1, "Error."),
    (
        exit::PARTIAL,
        "The snapshot was saved, but some files could not be read or changed while read (named on stderr).",
    ),
    (
        exit::STOPPED,
        "The snapshot stopped at --max-upload or --max-duration: its uploads are indexed, no snapshot was saved.",
    ),
    (exit::NO_REPOSITORY, "There is no repository at the given place."),
    (exit::LOCKED, "The repository is locked by another process."),
    (exit::WRONG_PASSWORD, "Wrong password: no key of the repository opens with it."),
    (exit::NEEDS_LOGIN, "Telegram needs tstor login."),
    (exit::UNREACHABLE, "Telegram could not be reached within TSTOR_TG_UNREACHABLE_TIMEOUT."),
];

/// Examples: what each does, and the command line.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("Create the built-in local repository and back up a directory:", "tstor init\ntstor snapshot ~/work"),
    (
        "From cron: the password from a file, nothing printed on success:",
        "tstor -q --password-file ~/.tstor-pass snapshot ~/work --exclude-caches",
    ),
    ("The newest snapshot of each host:", "tstor snapshots --latest 1 --group-by host --compact"),
    (
        "Restore the newest snapshot of ~/work taken on host laptop:",
        "tstor restore latest --host laptop --path ~/work --target /tmp/restored",
    ),
    ("Keep 7 daily and 4 weekly snapshots and delete the rest:", "tstor forget --keep-daily 7 --keep-weekly 4 --prune"),
    ("Use a Telegram channel:", "tstor login\ntstor --repo 'telegram:new:\"My backups\"' init"),
    (
        "Install bash completions for your user:",
        "tstor completions bash > ~/.local/share/bash-completion/completions/tstor",
    ),
];
