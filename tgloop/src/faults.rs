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
