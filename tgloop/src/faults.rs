//! Failure injection: rules that make the next calls of a named method fail
//! the way Telegram or the network can (flood waits, RPC errors, dropped
//! connections, answers lost after the work was done, slow answers).

use std::time::Duration;

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
}

#[derive(Debug)]
struct Rule {
    method: String,
    skip: usize,
    times: usize,
    fault: Fault,
}

/// The pending rules, consulted once per call in the order they were added.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Vec<Rule>,
}

impl Faults {
    /// Lets `skip` calls of `method` through, then applies `fault` to the next `times` calls.
    pub fn add(&mut self, method: &str, skip: usize, times: usize, fault: Fault) {
        if times > 0 {
            self.rules.push(Rule { method: method.to_string(), skip, times, fault });
        }
    }

    /// The fault for a call of `method`, if any rule fires now.
    pub fn take(&mut self, method: &str) -> Option<Fault> {
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
}
