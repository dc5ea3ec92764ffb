//! Which entries a snapshot leaves out, and why: gitignore-style patterns
//! (`--exclude`, `--iexclude` and the files holding them), per-directory
//! `.tstorignore` files, marker files (`--exclude-if-present`,
//! `--exclude-caches`), `--exclude-larger-than` and `--one-file-system`.
//! The walker and the progress scan ask the same [`Exclusions`] about every
//! entry below a backup root; the roots themselves are always backed up.
//!
//! Patterns use the `ignore` crate's gitignore matcher: `*`, `?`, `[..]`,
//! `**`, `!` to re-include, a trailing `/` for directories only. Patterns
//! given on the command line or in the configuration are matched against the
//! absolute path: one starting with `/` is anchored at the file system root,
//! any other matches at any depth (`*.o`, `build/cache`), as in restic. A
//! `.tstorignore` file follows git's rules for a `.gitignore`: it applies to
//! its directory and everything below, `/x` is anchored at that directory,
//! and the file in the deepest directory that has an opinion decides.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder, Glob};
use ignore::Match;

/// The per-directory ignore file honoured by default.
pub const IGNORE_FILE: &str = ".tstorignore";
/// The name of a cache directory tag (<https://bford.info/cachedir/>).
pub const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
/// What a valid cache directory tag starts with.
pub const CACHEDIR_SIGNATURE: &[u8; 43] = b"Signature: 8a477f597d28d172789f06886806bc55";
/// Ignore files larger than this are not read.
const MAX_IGNORE_FILE: u64 = 4 << 20;

/// A pattern or pattern file that cannot be used, or an ignore file that
/// could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExcludeError {
    #[error("bad exclude pattern `{pattern}`{}: {message}", origin.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
    Pattern { pattern: String, origin: Option<String>, message: String },
    #[error("cannot read exclude file {}: {source}", path.display())]
    ReadFile { path: PathBuf, source: io::Error },
    #[error("ignore file {}: {message}", path.display())]
    IgnoreFile { path: PathBuf, message: String },
}

/// What to leave out of a snapshot, as given by flags or the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExcludeOptions {
    /// Gitignore-style patterns (`--exclude`).
    pub patterns: Vec<String>,
    /// The same, matched without regard to case (`--iexclude`).
    pub ipatterns: Vec<String>,
    /// Files of patterns, one a line, `#` for comments (`--exclude-file`).
    pub pattern_files: Vec<PathBuf>,
    /// Files of case-insensitive patterns (`--iexclude-file`).
    pub ipattern_files: Vec<PathBuf>,
    /// Leave out a directory holding an entry of one of these names.
    pub if_present: Vec<String>,
    /// Leave out a directory holding a valid `CACHEDIR.TAG`.
    pub caches: bool,
    /// Leave out regular files larger than this many bytes.
    pub larger_than: Option<u64>,
    /// Do not descend into directories on another file system than their root.
    pub one_file_system: bool,
    /// The name of the per-directory ignore file; `None` to honour none.
    pub ignore_file: Option<String>,
}

impl Default for ExcludeOptions {
    fn default() -> Self {
        ExcludeOptions {
            patterns: Vec::new(),
            ipatterns: Vec::new(),
            pattern_files: Vec::new(),
            ipattern_files: Vec::new(),
            if_present: Vec::new(),
            caches: false,
            larger_than: None,
            one_file_system: false,
            ignore_file: Some(IGNORE_FILE.to_string()),
        }
    }
}

/// Why an entry was left out; borrowed from the rules, for logging.
#[derive(Debug)]
pub enum Reason<'a> {
    /// An `--exclude` pattern (or one from an `--exclude-file`).
    Pattern(&'a Glob),
    /// An `--iexclude` pattern (or one from an `--iexclude-file`).
    IPattern(&'a Glob),
    /// A pattern in a per-directory ignore file.
    IgnoreFile(&'a Glob),
    /// The directory holds an entry of this name.
    IfPresent(&'a OsStr),
    /// The directory holds a valid `CACHEDIR.TAG`.
    CacheDir,
    /// A regular file larger than this many bytes.
    LargerThan(u64),
    /// A directory on another file system than its backup root.
    OtherFileSystem,
}

fn origin(g: &Glob) -> String {
    g.from().map(|f| format!(" from {}", f.display())).unwrap_or_default()
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Pattern(g) => write!(f, "exclude pattern `{}`{}", g.original(), origin(g)),
            Reason::IPattern(g) => write!(f, "case-insensitive exclude pattern `{}`{}", g.original(), origin(g)),
            Reason::IgnoreFile(g) => write!(f, "pattern `{}`{}", g.original(), origin(g)),
            Reason::IfPresent(name) => write!(f, "the directory holds {}", name.to_string_lossy()),
            Reason::CacheDir => write!(f, "the directory holds a valid {CACHEDIR_TAG}"),
            Reason::LargerThan(n) => write!(f, "larger than {n} bytes"),
            Reason::OtherFileSystem => write!(f, "on another file system"),
        }
    }
}

/// The outcome of [`Exclusions::enter_dir`].
#[derive(Debug)]
pub enum Enter<'a> {
    /// The directory is left out; nothing was pushed on the stack.
    Excluded(Reason<'a>),
    /// The directory's entries are to be looked at; [`IgnoreStack::leave`]
    /// must follow them. A problem with the directory's ignore file, if any,
    /// is for the caller to report (the rest of the file still applies).
    Entered(Option<ExcludeError>),
}

/// The ignore-file matchers of the directories on the current walk path,
/// one frame per directory entered (`None` where a directory has no file).
#[derive(Debug, Default)]
pub struct IgnoreStack {
    frames: Vec<Option<Gitignore>>,
}

impl IgnoreStack {
    /// Pops the frame of the directory whose entries are done.
    pub fn leave(&mut self) {
        self.frames.pop();
    }

    /// How many directories are entered.
    pub fn depth(&self) -> usize {
        self.frames.len()
    }

    /// The deepest ignore file with an opinion decides: git's precedence.
    fn matched(&self, path: &Path, is_dir: bool) -> Option<&Glob> {
        for gi in self.frames.iter().rev().flatten() {
            match gi.matched(path, is_dir) {
                Match::Ignore(g) => return Some(g),
                Match::Whitelist(_) => return None,
                Match::None => {}
            }
        }
        None
    }
}

/// The rules deciding which entries below a backup root are left out. Built
/// once per snapshot; immutable and shared by the walker and the progress scan.
#[derive(Clone, Debug)]
pub struct Exclusions {
    patterns: Gitignore,
    ipatterns: Gitignore,
    if_present: Vec<OsString>,
    caches: bool,
    larger_than: Option<u64>,
    one_file_system: bool,
    ignore_file: Option<OsString>,
}

impl Default for Exclusions {
    /// Leaves nothing out and honours no ignore files.
    fn default() -> Self {
        Exclusions {
            patterns: Gitignore::empty(),
            ipatterns: Gitignore::empty(),
            if_present: Vec::new(),
            caches: false,
            larger_than: None,
            one_file_system: false,
            ignore_file: None,
        }
    }
}

/// Rewrites a command-line pattern so that one with a slash inside, but not
/// at its start, matches at any depth (restic's rule), not only at `/`.
fn unanchored(pattern: &str) -> String {
    let (neg, body) = match pattern.strip_prefix('!') {
        Some(rest) => ("!", rest),
        None => ("", pattern),
    };
    let inner = body.trim_end_matches('/');
    if body.starts_with('/') || body.starts_with("**/") || !inner.contains('/') {
        pattern.to_string()
    } else {
        format!("{neg}**/{body}")
    }
}

fn add_pattern(b: &mut GitignoreBuilder, from: Option<&Path>, line: usize, pattern: &str) -> Result<(), ExcludeError> {
    b.add_line(from.map(Path::to_path_buf), &unanchored(pattern)).map(|_| ()).map_err(|e| ExcludeError::Pattern {
        pattern: pattern.to_string(),
        origin: from.map(|f| format!("{} line {line}", f.display())),
        message: glob_error(&e),
    })
}

fn glob_error(e: &ignore::Error) -> String {
    match e {
        ignore::Error::Glob { err, .. } => err.clone(),
        other => other.to_string(),
    }
}

fn pattern_matcher(patterns: &[String], files: &[PathBuf], case_insensitive: bool) -> Result<Gitignore, ExcludeError> {
    if patterns.is_empty() && files.is_empty() {
        return Ok(Gitignore::empty());
    }
    let mut b = GitignoreBuilder::new("/");
    b.case_insensitive(case_insensitive).map_err(|e| ExcludeError::Pattern {
        pattern: String::new(),
        origin: None,
        message: glob_error(&e),
    })?;
    for p in patterns {
        add_pattern(&mut b, None, 0, p)?;
    }
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|source| ExcludeError::ReadFile { path: f.clone(), source })?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                add_pattern(&mut b, Some(f), n + 1, line)?;
            }
        }
    }
    b.build().map_err(|e| ExcludeError::Pattern { pattern: String::new(), origin: None, message: glob_error(&e) })
}

impl Exclusions {
    /// Compiles the options; reads the pattern files they name.
    pub fn new(opts: &ExcludeOptions) -> Result<Exclusions, ExcludeError> {
        Ok(Exclusions {
            patterns: pattern_matcher(&opts.patterns, &opts.pattern_files, false)?,
            ipatterns: pattern_matcher(&opts.ipatterns, &opts.ipattern_files, true)?,
            if_present: opts.if_present.iter().filter(|n| !n.is_empty()).map(OsString::from).collect(),
            caches: opts.caches,
            larger_than: opts.larger_than,
            one_file_system: opts.one_file_system,
            ignore_file: opts.ignore_file.as_ref().filter(|n| !n.is_empty()).map(OsString::from),
        })
    }

    /// Whether the entry at `path` (below a backup root; `meta` from
    /// `lstat`) is left out, and why. `root_device` is the device of its
    /// backup root, for `--one-file-system`.
    pub fn entry<'s>(
        &'s self,
        stack: &'s IgnoreStack,
        path: &Path,
        meta: &Metadata,
        root_device: Option<u64>,
    ) -> Option<Reason<'s>> {
        let is_dir = meta.is_dir();
        if self.one_file_system && is_dir && root_device.is_some_and(|d| d != meta.dev()) {
            return Some(Reason::OtherFileSystem);
        }
        if let Some(limit) = self.larger_than {
            if meta.is_file() && meta.len() > limit {
                return Some(Reason::LargerThan(limit));
            }
        }
        if let Match::Ignore(g) = self.patterns.matched(path, is_dir) {
            return Some(Reason::Pattern(g));
        }
        if let Match::Ignore(g) = self.ipatterns.matched(path, is_dir) {
            return Some(Reason::IPattern(g));
        }
        stack.matched(path, is_dir).map(Reason::IgnoreFile)
    }

    /// Whether a pattern (`--exclude`, `--iexclude` or their files) leaves
    /// out the entry at the absolute `path`, and which: for the entries of a
    /// stored snapshot (`rewrite`), where there are no ignore files, marker
    /// files or metadata to ask.
    pub fn matches_path(&self, path: &Path, is_dir: bool) -> Option<Reason<'_>> {
        if let Match::Ignore(g) = self.patterns.matched(path, is_dir) {
            return Some(Reason::Pattern(g));
        }
        if let Match::Ignore(g) = self.ipatterns.matched(path, is_dir) {
            return Some(Reason::IPattern(g));
        }
        None
    }

    /// Called once the directory `dir` is listed, before its entries are
    /// looked at; `has(name)` says whether it holds an entry of that name. A
    /// directory entered on an empty stack is a backup root and is never
    /// left out for what it holds. Otherwise a marker file
    /// (`--exclude-if-present`, a valid `CACHEDIR.TAG` with
    /// `--exclude-caches`) leaves it out. A directory that is entered gets a
    /// frame on `stack`, with its ignore file's matcher when it has one.
    pub fn enter_dir<'s>(&'s self, stack: &mut IgnoreStack, dir: &Path, has: impl Fn(&OsStr) -> bool) -> Enter<'s> {
        if stack.depth() > 0 {
            if let Some(name) = self.if_present.iter().find(|n| has(n)) {
                return Enter::Excluded(Reason::IfPresent(name));
            }
            if self.caches && has(OsStr::new(CACHEDIR_TAG)) && is_cachedir_tag(&dir.join(CACHEDIR_TAG)) {
                return Enter::Excluded(Reason::CacheDir);
            }
        }
        let (frame, problem) = match &self.ignore_file {
            Some(name) if has(name) => load_ignore_file(dir, &dir.join(name)),
            _ => (None, None),
        };
        stack.frames.push(frame);
        Enter::Entered(problem)
    }
}

/// Opens a regular file without following a symlink and without blocking on
/// a FIFO.
fn open_plain(path: &Path) -> io::Result<std::fs::File> {
    let f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(f)
}

/// Whether `path` is a regular file starting with the cache directory signature.
pub fn is_cachedir_tag(path: &Path) -> bool {
    let Ok(f) = open_plain(path) else { return false };
    let mut head = Vec::with_capacity(CACHEDIR_SIGNATURE.len());
    match f.take(CACHEDIR_SIGNATURE.len() as u64).read_to_end(&mut head) {
        Ok(_) => head == CACHEDIR_SIGNATURE,
        Err(_) => false,
    }
}

/// Builds the matcher of one ignore file, rooted at its directory. Lines
/// that are not valid patterns are skipped and reported (the first one).
fn load_ignore_file(dir: &Path, path: &Path) -> (Option<Gitignore>, Option<ExcludeError>) {
    let problem = |message: String| ExcludeError::IgnoreFile { path: path.to_path_buf(), message };
    let mut bytes = Vec::new();
    let read = open_plain(path).and_then(|f| f.take(MAX_IGNORE_FILE + 1).read_to_end(&mut bytes));
    if let Err(e) = read {
        let why =
            if e.raw_os_error() == Some(libc::ELOOP) { "is a symlink; not read".to_string() } else { e.to_string() };
        return (None, Some(problem(why)));
    }
    if bytes.len() as u64 > MAX_IGNORE_FILE {
        return (None, Some(problem(format!("larger than {MAX_IGNORE_FILE} bytes; not read"))));
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut b = GitignoreBuilder::new(dir);
    let mut first_bad = None;
    for (n, line) in text.lines().enumerate() {
        if let Err(e) = b.add_line(Some(path.to_path_buf()), line) {
            first_bad
                .get_or_insert_with(|| problem(format!("line {}: bad pattern `{line}`: {}", n + 1, glob_error(&e))));
        }
    }
    match b.build() {
        Ok(gi) => (Some(gi), first_bad),
        Err(e) => (None, Some(problem(glob_error(&e)))),
    }
}

/// Whether a sorted list of names holds `name` (a directory listing as the
/// walker keeps it).
pub fn sorted_has(names: &[(Vec<u8>, PathBuf)], name: &OsStr) -> bool {
    names.binary_search_by(|(n, _)| n.as_slice().cmp(name.as_bytes())).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rules(opts: ExcludeOptions) -> Exclusions {
        Exclusions::new(&opts).unwrap()
    }

    fn opts() -> ExcludeOptions {
        ExcludeOptions::default()
    }

    /// Lists `dir` as the walker does.
    fn listing(dir: &Path) -> Vec<(Vec<u8>, PathBuf)> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().as_bytes().to_vec(), e.path()))
            .collect();
        v.sort();
        v
    }

    fn enter(ex: &Exclusions, stack: &mut IgnoreStack, dir: &Path) -> bool {
        let names = listing(dir);
        match ex.enter_dir(stack, dir, |n| sorted_has(&names, n)) {
            Enter::Excluded(_) => false,
            Enter::Entered(problem) => {
                assert!(problem.is_none(), "{problem:?}");
                true
            }
        }
    }

    fn excluded(ex: &Exclusions, stack: &IgnoreStack, path: &Path) -> bool {
        let meta = fs::symlink_metadata(path).unwrap();
        ex.entry(stack, path, &meta, Some(meta.dev())).is_some()
    }

    #[test]
    fn exclude_patterns_match_names_anywhere_and_absolute_paths_when_anchored() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("a/build/cache")).unwrap();
        fs::create_dir_all(root.join("logs")).unwrap();
        fs::write(root.join("a/x.log"), b"").unwrap();
        fs::write(root.join("a/keep.log"), b"").unwrap();
        fs::write(root.join("a/logs"), b"a file named logs").unwrap();
        let anchored = format!("{}/a/build", root.display());
        let ex = rules(ExcludeOptions {
            patterns: vec!["*.log".into(), "!keep.log".into(), "logs/".into(), "build/cache".into()],
            ..opts()
        });
        let s = IgnoreStack::default();
        assert!(excluded(&ex, &s, &root.join("a/x.log")));
        assert!(!excluded(&ex, &s, &root.join("a/keep.log")), "negation re-includes");
        assert!(excluded(&ex, &s, &root.join("logs")), "directory-only pattern, directory");
        assert!(!excluded(&ex, &s, &root.join("a/logs")), "directory-only pattern, file");
        assert!(excluded(&ex, &s, &root.join("a/build/cache")), "inner slash matches at any depth");
        assert!(!excluded(&ex, &s, &root.join("a/build")));
        let ex = rules(ExcludeOptions { patterns: vec![anchored], ..opts() });
        assert!(excluded(&ex, &s, &root.join("a/build")));
        assert!(
            !excluded(&ex, &s, &root.join("a/build/cache")),
            "the walker never gets there; the pattern is anchored"
        );
    }

    #[test]
    fn iexclude_ignores_case_and_exclude_does_not() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("Photo.JPG"), b"").unwrap();
        let s = IgnoreStack::default();
        let p = t.path().join("Photo.JPG");
        assert!(!excluded(&rules(ExcludeOptions { patterns: vec!["*.jpg".into()], ..opts() }), &s, &p));
        assert!(excluded(&rules(ExcludeOptions { ipatterns: vec!["*.jpg".into()], ..opts() }), &s, &p));
    }

    #[test]
    fn pattern_files_skip_comments_and_name_the_bad_line() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("ex");
        fs::write(&f, "# comment\n\n  *.tmp  \n").unwrap();
        let ex = rules(ExcludeOptions { pattern_files: vec![f.clone()], ..opts() });
        fs::write(t.path().join("a.tmp"), b"").unwrap();
        assert!(excluded(&ex, &IgnoreStack::default(), &t.path().join("a.tmp")));
        fs::write(&f, "ok\nbad{\n").unwrap();
        let e = Exclusions::new(&ExcludeOptions { pattern_files: vec![f.clone()], ..opts() }).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let missing = t.path().join("missing");
        let e = Exclusions::new(&ExcludeOptions { ipattern_files: vec![missing], ..opts() }).unwrap_err();
        assert!(matches!(e, ExcludeError::ReadFile { .. }), "{e}");
        assert!(Exclusions::new(&ExcludeOptions { patterns: vec!["a{".into()], ..opts() }).is_err());
    }

    #[test]
    fn larger_than_applies_to_files_only() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("big"), vec![0u8; 2048]).unwrap();
        fs::write(t.path().join("small"), vec![0u8; 1024]).unwrap();
        fs::create_dir(t.path().join("dir")).unwrap();
        let ex = rules(ExcludeOptions { larger_than: Some(1024), ..opts() });
        let s = IgnoreStack::default();
        assert!(excluded(&ex, &s, &t.path().join("big")));
        assert!(!excluded(&ex, &s, &t.path().join("small")));
        assert!(!excluded(&ex, &s, &t.path().join("dir")));
    }

    #[test]
    fn marker_files_exclude_directories_below_the_root_only() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for d in ["good", "bad", "marked"] {
            fs::create_dir(root.join(d)).unwrap();
        }
        let mut sig = CACHEDIR_SIGNATURE.to_vec();
        sig.extend_from_slice(b"\n# a cache\n");
        fs::write(root.join("good/CACHEDIR.TAG"), &sig).unwrap();
        fs::write(root.join("bad/CACHEDIR.TAG"), b"Signature: 0000000000000000000000000000000\n").unwrap();
        fs::write(root.join("marked/.nobackup"), b"").unwrap();
        fs::write(root.join(".nobackup"), b"").unwrap();
        let ex = rules(ExcludeOptions { caches: true, if_present: vec![".nobackup".into()], ..opts() });
        let mut s = IgnoreStack::default();
        assert!(enter(&ex, &mut s, root), "a root is never excluded by its contents");
        assert!(!enter(&ex, &mut s, &root.join("good")));
        assert!(enter(&ex, &mut s, &root.join("bad")));
        s.leave();
        assert!(!enter(&ex, &mut s, &root.join("marked")));
        assert_eq!(s.depth(), 1);
        // A symlink named CACHEDIR.TAG is not a tag.
        fs::create_dir(root.join("linked")).unwrap();
        std::os::unix::fs::symlink(root.join("good/CACHEDIR.TAG"), root.join("linked/CACHEDIR.TAG")).unwrap();
        assert!(enter(&ex, &mut s, &root.join("linked")));
        assert!(!is_cachedir_tag(&root.join("linked/CACHEDIR.TAG")));
    }

    #[test]
    fn ignore_files_apply_below_their_directory_with_git_precedence() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::create_dir_all(root.join("other/tmp")).unwrap();
        fs::create_dir_all(root.join("tmp")).unwrap();
        fs::write(root.join(".tstorignore"), "*.log\n!important.log\n/tmp/\nnotes.txt\n").unwrap();
        fs::write(root.join("sub/.tstorignore"), "!debug.log\n*.bin\n").unwrap();
        for f in ["a.log", "important.log", "notes.txt", "sub/debug.log", "sub/x.log", "sub/deeper/notes.txt"] {
            fs::write(root.join(f), b"").unwrap();
        }
        fs::write(root.join("sub/deeper/y.bin"), b"").unwrap();
        fs::write(root.join("z.bin"), b"").unwrap();
        let ex = rules(opts());
        let mut s = IgnoreStack::default();
        assert!(enter(&ex, &mut s, root));
        assert!(excluded(&ex, &s, &root.join("a.log")));
        assert!(!excluded(&ex, &s, &root.join("important.log")));
        assert!(excluded(&ex, &s, &root.join("tmp")), "anchored directory");
        assert!(!excluded(&ex, &s, &root.join("z.bin")), "the sub directory's rules stay below it");
        assert!(enter(&ex, &mut s, &root.join("other")));
        assert!(!excluded(&ex, &s, &root.join("other/tmp")), "anchored at the file's directory");
        s.leave();
        assert!(enter(&ex, &mut s, &root.join("sub")));
        assert!(!excluded(&ex, &s, &root.join("sub/debug.log")), "the deeper file re-includes");
        assert!(excluded(&ex, &s, &root.join("sub/x.log")), "the parent's rule still applies");
        assert!(enter(&ex, &mut s, &root.join("sub/deeper")));
        assert!(excluded(&ex, &s, &root.join("sub/deeper/y.bin")));
        assert!(excluded(&ex, &s, &root.join("sub/deeper/notes.txt")));
        s.leave();
        s.leave();
        s.leave();
        assert_eq!(s.depth(), 0);
        // Without ignore files nothing is read.
        let none = rules(ExcludeOptions { ignore_file: None, ..opts() });
        assert!(enter(&none, &mut s, root));
        assert!(!excluded(&none, &s, &root.join("a.log")));
    }

    #[test]
    fn a_bad_ignore_file_is_reported_and_its_good_lines_still_apply() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::write(root.join(".tstorignore"), "*.log\nbad{\n").unwrap();
        fs::write(root.join("a.log"), b"").unwrap();
        let ex = rules(opts());
        let mut s = IgnoreStack::default();
        let names = listing(root);
        match ex.enter_dir(&mut s, root, |n| sorted_has(&names, n)) {
            Enter::Entered(Some(e)) => assert!(e.to_string().contains("line 2"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(excluded(&ex, &s, &root.join("a.log")));
        s.leave();
        fs::remove_file(root.join(".tstorignore")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.join(".tstorignore")).unwrap();
        let names = listing(root);
        match ex.enter_dir(&mut s, root, |n| sorted_has(&names, n)) {
            Enter::Entered(Some(e)) => assert!(e.to_string().contains("symlink"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reasons_name_the_rule() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("a.o"), vec![0u8; 10]).unwrap();
        let ex = rules(ExcludeOptions { patterns: vec!["*.o".into()], ..opts() });
        let s = IgnoreStack::default();
        let p = t.path().join("a.o");
        let meta = fs::symlink_metadata(&p).unwrap();
        assert_eq!(ex.entry(&s, &p, &meta, None).unwrap().to_string(), "exclude pattern `*.o`");
        let ex = rules(ExcludeOptions { larger_than: Some(5), ..opts() });
        assert_eq!(ex.entry(&s, &p, &meta, None).unwrap().to_string(), "larger than 5 bytes");
    }

    #[test]
    fn progress_totals_leave_out_what_the_snapshot_leaves_out() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("r");
        fs::create_dir_all(root.join("cache")).unwrap();
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("cache/CACHEDIR.TAG"), CACHEDIR_SIGNATURE).unwrap();
        fs::write(root.join("cache/data"), vec![0u8; 100]).unwrap();
        fs::write(root.join(".tstorignore"), "*.log\n").unwrap();
        fs::write(root.join("sub/a.log"), vec![0u8; 100]).unwrap();
        fs::write(root.join("sub/big"), vec![0u8; 5000]).unwrap();
        fs::write(root.join("sub/kept"), vec![0u8; 10]).unwrap();
        let ex = rules(ExcludeOptions { caches: true, larger_than: Some(1000), ..opts() });
        let mut last = (0, 0);
        crate::archiver::scan_totals(std::slice::from_ref(&root), &ex, |f, b| last = (f, b));
        assert_eq!(last, (2, 16), ".tstorignore (6 bytes) and sub/kept");
        crate::archiver::scan_totals(&[root.join("sub/big")], &ex, |f, b| last = (f, b));
        assert_eq!(last, (1, 5000), "a root is always counted");
    }

    #[test]
    fn unanchored_rewrites_only_inner_slashes() {
        assert_eq!(unanchored("*.o"), "*.o");
        assert_eq!(unanchored("target/"), "target/");
        assert_eq!(unanchored("/abs/path"), "/abs/path");
        assert_eq!(unanchored("a/b"), "**/a/b");
        assert_eq!(unanchored("!a/b/"), "!**/a/b/");
        assert_eq!(unanchored("**/a/b"), "**/a/b");
    }
}
