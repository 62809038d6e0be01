//! The process-compose release the emulator pretends to be (`--emulate-version`).
//!
//! Only what pc-eventd can observe depends on it: whether the state stream
//! route exists, and which `ProcessState` keys are written.

use std::fmt;
use std::str::FromStr;

/// A release number `vMAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// What the emulator is by default: every emulated feature on.
    pub const DEFAULT: Version = Version::new(1, 122, 0);
    /// `GET /process/states/ws`, and the `process_{start,ready,end}_time` and
    /// `last_activity_time` keys of `ProcessState`.
    pub const STATE_STREAM: Version = Version::new(1, 110, 0);
    /// The `success_exit_codes` key of `ProcessState`.
    pub const SUCCESS_EXIT_CODES: Version = Version::new(1, 116, 0);

    pub fn has_state_stream(self) -> bool {
        self >= Self::STATE_STREAM
    }

    pub fn has_process_times(self) -> bool {
        self >= Self::STATE_STREAM
    }

    pub fn has_success_exit_codes(self) -> bool {
        self >= Self::SUCCESS_EXIT_CODES
    }
}

impl Default for Version {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = String;

    /// `v1.103.0`, `1.103.0` or `1.103` (the patch defaults to 0).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is not a version like v1.103.0");
        let digits = text.trim().strip_prefix('v').unwrap_or(text.trim());
        let parts: Vec<&str> = digits.split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(bad());
        }
        let mut numbers = [0u32; 3];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            *slot = part.parse().map_err(|_| bad())?;
        }
        Ok(Version::new(numbers[0], numbers[1], numbers[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_releases() {
        let v: Version = "v1.103.0".parse().unwrap();
        assert_eq!(v, Version::new(1, 103, 0));
        assert_eq!(v.to_string(), "v1.103.0");
        assert_eq!("1.116".parse::<Version>(), Ok(Version::new(1, 116, 0)));
        assert!("v1".parse::<Version>().is_err());
        assert!("v1.x.0".parse::<Version>().is_err());
        assert!("v1.2.3.4".parse::<Version>().is_err());
        assert!("v1.-2.0".parse::<Version>().is_err());

        assert!(!v.has_state_stream() && !v.has_process_times());
        let v110 = Version::new(1, 110, 0);
        assert!(v110.has_state_stream() && v110.has_process_times());
        assert!(!v110.has_success_exit_codes());
        assert!(Version::new(1, 109, 9) < v110);
        assert!(Version::DEFAULT.has_success_exit_codes());
        assert!(Version::new(2, 0, 0).has_state_stream());
    }
}
