//! Failure injection: rules that make the next calls of a named method fail
//! the way Telegram or the network can (flood waits, RPC errors, dropped
//! connections, answers lost after the work was done, slow answers), and
//! random rates of such failures for a server left running. The rates are
//! rolled from a seeded generator: the seed is printed by a failing sweep,
//! and the same seed replays the same sequence of dice (the faults then hit
//! the same calls as far as the client makes its calls in the same order).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One way a call can go wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer `420 FLOOD_WAIT_<seconds>` without running the call.
    FloodWait(u32),
    /// Answer `420 FLOOD_PREMIUM_WAIT_<seconds>` without running the call.
    FloodPremiumWait(u32),
    /// Answer with this RPC error without running the call.
    Error { code: i32, message: String },
    /// Close the connection without running the call.
    Drop,
    /// Run the call, then close the connection before the answer is sent.
    LoseAnswer,
    /// Wait this long before running and answering the call.
    Delay(Duration),
    /// Forget the last part of pending uploads, so that the call answers
    /// `FILE_PART_X_MISSING` as Telegram does when uploaded parts
    /// expired before the document was sent, without running the call.
    PartMissing,
    /// Give every document a new file reference, then run the call (a
    /// download with an old reference fails with `FILE_REFERENCE_EXPIRED`).
    ExpireReferences,
}

/// Random failure rates, each a probability per call.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// `FLOOD_WAIT_1` on any call.
    pub flood: f64,
    /// The connection closed before any call runs.
    pub drop: f64,
    /// The call runs, its answer is lost.
    pub lose: f64,
    /// `messages.sendMedia` found a part of its file missing (`FILE_PART_X_MISSING`).
    pub part_missing: f64,
    /// File references expired before an `upload.getFile`.
    pub file_reference: f64,
}

impl Rates {
    /// Parses `flood:0.05,drop:0.02,lose:0.01,part-missing:0.02,file-reference:0.1`
    /// (any subset, any order).
    pub fn parse(spec: &str) -> Result<Rates, String> {
        let mut r = Rates::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item.split_once(':').ok_or_else(|| format!("`{item}`: expected NAME:RATE"))?;
            let v: f64 = value.parse().map_err(|_| format!("`{item}`: {value} is not a number"))?;
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("`{item}`: a rate is between 0 and 1"));
            }
            match name {
                "flood" => r.flood = v,
                "drop" => r.drop = v,
                "lose" => r.lose = v,
                "part-missing" => r.part_missing = v,
                "file-reference" => r.file_reference = v,
                _ => {
                    return Err(format!(
                        "`{name}`: known faults are flood, drop, lose, part-missing and file-reference"
                    ))
                }
            }
        }
        Ok(r)
    }

    /// The fault a call of `method` meets, if the dice (`rng`) say so.
    fn roll(&self, method: &str, rng: &mut impl Rng) -> Option<Fault> {
        let mut hit = |p: f64| p > 0.0 && rng.gen_bool(p);
        if method == "messages.sendMedia" && hit(self.part_missing) {
            return Some(Fault::PartMissing);
        }
        if method == "upload.getFile" && hit(self.file_reference) {
            return Some(Fault::ExpireReferences);
        }
        if hit(self.flood) {
            return Some(Fault::FloodWait(1));
        }
        if hit(self.drop) {
            return Some(Fault::Drop);
        }
        if hit(self.lose) {
            return Some(Fault::LoseAnswer);
        }
        None
    }
}

#[derive(Debug)]
struct Rule {
    method: String,
    skip: usize,
    times: usize,
    fault: Fault,
}

/// The pending rules, consulted once per call in the order they were added,
/// and the random rates with the seeded generator they are rolled from.
#[derive(Debug)]
pub struct Faults {
    rules: Vec<Rule>,
    rates: Rates,
    seed: u64,
    rng: StdRng,
}

impl Default for Faults {
    /// No rules, no rates, a random seed.
    fn default() -> Faults {
        Faults::seeded(rand::random())
    }
}

impl Faults {
    /// No rules, no rates, random faults rolled from `seed`.
    pub fn seeded(seed: u64) -> Faults {
        Faults { rules: Vec::new(), rates: Rates::default(), seed, rng: StdRng::seed_from_u64(seed) }
    }

    /// The seed the random faults are rolled from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Lets `skip` calls of `method` through, then applies `fault` to the next `times` calls.
    pub fn add(&mut self, method: &str, skip: usize, times: usize, fault: Fault) {
        if times > 0 {
            self.rules.push(Rule { method: method.to_string(), skip, times, fault });
        }
    }

    /// Sets the random failure rates.
    pub fn set_rates(&mut self, rates: Rates) {
        self.rates = rates;
    }

    /// The fault for a call of `method`: a rule that fires now, else a random one.
    pub fn take(&mut self, method: &str) -> Option<Fault> {
        self.take_rule(method).or_else(|| self.roll(method))
    }

    /// The injected rule that fires for this call of `method`, if any.
    pub fn take_rule(&mut self, method: &str) -> Option<Fault> {
        let mut fired = None;
        for rule in self.rules.iter_mut().filter(|r| r.method == method) {
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            rule.times -= 1;
            fired = Some(rule.fault.clone());
            break;
        }
        self.rules.retain(|r| r.times > 0);
        fired
    }

    /// A random fault for a call of `method`, at the rates set.
    pub fn roll(&mut self, method: &str) -> Option<Fault> {
        self.rates.roll(method, &mut self.rng)
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    pub fn pending(&self) -> usize {
        self.rules.iter().map(|r| r.times).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_fire_in_order_after_skips() {
        let mut f = Faults::default();
        f.add("upload.saveBigFilePart", 1, 2, Fault::FloodWait(3));
        f.add("upload.saveBigFilePart", 0, 1, Fault::Drop);
        assert_eq!(f.take("upload.saveBigFilePart"), Some(Fault::Drop));
        assert_eq!(f.take("upload.saveBigFilePart"), Some(Fault::FloodWait(3)));
        assert_eq!(f.take("messages.sendMedia"), None);
        assert_eq!(f.take("upload.saveBigFilePart"), Some(Fault::FloodWait(3)));
        assert_eq!(f.take("upload.saveBigFilePart"), None);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn rates_parse_and_fire() {
        let r = Rates::parse("flood:0.05, drop:0.02,part-missing:1,file-reference:0.1").unwrap();
        assert_eq!(r.flood, 0.05);
        assert_eq!(r.part_missing, 1.0);
        assert!(Rates::parse("flood:2").is_err());
        assert!(Rates::parse("nonsense:0.1").is_err());
        assert!(Rates::parse("flood").is_err());
        let mut f = Faults::default();
        f.set_rates(r);
        assert_eq!(f.take("messages.sendMedia"), Some(Fault::PartMissing));
        f.set_rates(Rates { lose: 1.0, ..Rates::default() });
        assert_eq!(f.take("upload.getFile"), Some(Fault::LoseAnswer));
        f.set_rates(Rates::default());
        assert_eq!(f.take("upload.getFile"), None);
    }

    #[test]
    fn one_seed_rolls_the_same_faults() {
        let rates = Rates::parse("flood:0.1,drop:0.05,lose:0.05,part-missing:0.05,file-reference:0.2").unwrap();
        let run = |seed: u64| {
            let mut f = Faults::seeded(seed);
            f.set_rates(rates);
            let methods = ["upload.saveBigFilePart", "messages.sendMedia", "upload.getFile"];
            (0..300).map(|i| f.take(methods[i % 3])).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert!(run(7).iter().any(Option::is_some));
        assert_eq!(Faults::seeded(7).seed(), 7);
    }
}

// ---- Premium waits: a free account's throughput budget ----

/// A free account's transfer budget, as Telegram enforces it with
/// `420 FLOOD_PREMIUM_WAIT_X` on `upload.saveFilePart`,
/// `upload.saveBigFilePart` and `upload.getFile`: the first `free_bytes`
/// moved go through untouched; after that, each window of `window` lets
/// about `bytes_per_sec × window` bytes through (varied by up to `jitter`
/// of itself from one window to the next, drawn from `seed`), and a call
/// that would go over is answered `FLOOD_PREMIUM_WAIT_<seconds to the end
/// of the window>` without running. Not a failure: a client that waits as
/// asked moves everything, at the budget's pace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PremiumWait {
    pub free_bytes: u64,
    pub bytes_per_sec: u64,
    pub window: Duration,
    /// How much the budget of one window varies, as a fraction (0..1).
    pub jitter: f64,
    pub seed: u64,
}

impl Default for PremiumWait {
    fn default() -> PremiumWait {
        PremiumWait { free_bytes: 0, bytes_per_sec: 4 << 20, window: Duration::from_secs(2), jitter: 0.0, seed: 0 }
    }
}

impl PremiumWait {
    /// Parses `after=16MiB,rate=4MiB,window=2,jitter=0.2,seed=7` (any
    /// subset, any order; sizes take B, KiB, MiB, GiB; `rate` is per
    /// second; `window` is in seconds, at least 1).
    pub fn parse(spec: &str) -> Result<PremiumWait, String> {
        let mut p = PremiumWait::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item.split_once('=').ok_or_else(|| format!("`{item}`: expected NAME=VALUE"))?;
            let bad = |what: &str| format!("`{item}`: {value} is not {what}");
            match name {
                "after" => p.free_bytes = parse_bytes(value).ok_or_else(|| bad("a size"))?,
                "rate" => {
                    p.bytes_per_sec =
                        parse_bytes(value.trim_end_matches("/s")).filter(|&r| r > 0).ok_or_else(|| bad("a rate"))?
                }
                "window" => {
                    let s: u64 = value.parse().ok().filter(|&s| s > 0).ok_or_else(|| bad("whole seconds"))?;
                    p.window = Duration::from_secs(s);
                }
                "jitter" => {
                    p.jitter = value.parse().ok().filter(|j| (0.0..1.0).contains(j)).ok_or_else(|| bad("in 0..1"))?
                }
                "seed" => p.seed = value.parse().map_err(|_| bad("a number"))?,
                _ => return Err(format!("`{name}`: known settings are after, rate, window, jitter and seed")),
            }
        }
        Ok(p)
    }

    /// Whether calls of `method` count against the budget.
    pub fn applies_to(method: &str) -> bool {
        matches!(method, "upload.saveFilePart" | "upload.saveBigFilePart" | "upload.getFile")
    }
}

fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().ok()?;
    let unit: u64 = match s[split..].to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// The running account of a [`PremiumWait`] profile: bytes moved, the
/// window in force and what is left of its budget.
#[derive(Debug)]
pub struct PremiumBudget {
    profile: PremiumWait,
    rng: rand::rngs::StdRng,
    moved: u64,
    /// Start of the current window, in time since the account started.
    window_start: Option<Duration>,
    left: u64,
    /// The budget the current window started with.
    full: u64,
    /// Calls answered with a premium wait.
    pub waits: usize,
}

impl PremiumBudget {
    pub fn new(profile: PremiumWait) -> PremiumBudget {
        use rand::SeedableRng;
        PremiumBudget {
            profile,
            rng: rand::rngs::StdRng::seed_from_u64(profile.seed),
            moved: 0,
            window_start: None,
            left: 0,
            full: 0,
            waits: 0,
        }
    }

    fn window_budget(&mut self) -> u64 {
        use rand::Rng;
        let base = self.profile.bytes_per_sec as f64 * self.profile.window.as_secs_f64();
        let j = self.profile.jitter;
        let factor = if j > 0.0 { 1.0 + self.rng.gen_range(-j..=j) } else { 1.0 };
        (base * factor).max(1.0) as u64
    }

    /// A call moving `bytes` at time `now` (since the account started):
    /// `None` lets it through and counts it; `Some(seconds)` is the premium
    /// wait to answer instead (the rest of the window, rounded up).
    pub fn admit(&mut self, now: Duration, bytes: u64) -> Option<u32> {
        if self.moved < self.profile.free_bytes {
            self.moved += bytes;
            return None;
        }
        let window = self.profile.window;
        let start = match self.window_start {
            Some(s) if now < s + window => s,
            _ => {
                // A new window: windows tile time from the first one.
                let s = match self.window_start {
                    Some(s) => s + window * ((now - s).as_nanos() / window.as_nanos()) as u32,
                    None => now,
                };
                self.window_start = Some(s);
                self.full = self.window_budget();
                self.left = self.full;
                s
            }
        };
        // A call larger than a whole window's budget goes through alone.
        let fresh = self.left == self.full;
        if bytes <= self.left || fresh {
            self.left = self.left.saturating_sub(bytes);
            self.moved += bytes;
            return None;
        }
        self.waits += 1;
        let rest = (start + window).saturating_sub(now);
        Some((rest.as_secs_f64().ceil() as u32).max(1))
    }
}

#[cfg(test)]
mod premium_tests {
    use super::*;

    #[test]
    fn premium_profile_parses_and_refuses_nonsense() {
        let p = PremiumWait::parse("after=16MiB, rate=4MiB/s,window=3,jitter=0.2,seed=9").unwrap();
        assert_eq!(
            p,
            PremiumWait {
                free_bytes: 16 << 20,
                bytes_per_sec: 4 << 20,
                window: Duration::from_secs(3),
                jitter: 0.2,
                seed: 9
            }
        );
        for bad in ["after=lots", "rate=0", "window=0", "jitter=1.5", "speed=3", "after"] {
            assert!(PremiumWait::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn after_the_free_bytes_each_window_lets_its_budget_through() {
        let s = Duration::from_secs;
        let mut b = PremiumBudget::new(PremiumWait {
            free_bytes: 1000,
            bytes_per_sec: 100,
            window: s(2),
            jitter: 0.0,
            seed: 1,
        });
        // The free bytes, however fast.
        assert_eq!(b.admit(s(0), 600), None);
        assert_eq!(b.admit(s(0), 600), None);
        // Then 200 bytes per 2-second window.
        assert_eq!(b.admit(s(10), 150), None);
        assert_eq!(b.admit(s(10), 50), None);
        assert_eq!(b.admit(s(10), 1), Some(2));
        assert_eq!(b.admit(Duration::from_millis(11_500), 1), Some(1));
        assert_eq!(b.admit(s(12), 200), None);
        assert_eq!(b.admit(s(13), 10), Some(1));
        assert_eq!(b.waits, 3);
    }

    #[test]
    fn the_same_seed_gives_the_same_budgets() {
        let profile = PremiumWait { bytes_per_sec: 1000, jitter: 0.5, seed: 42, ..PremiumWait::default() };
        let run = || {
            let mut b = PremiumBudget::new(profile);
            (0..200u64).map(|i| b.admit(Duration::from_millis(i * 50), 300)).collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        assert!(first.iter().any(Option::is_some) && first.iter().any(Option::is_none));
    }
}
