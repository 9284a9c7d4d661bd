//! The five boundary modes of `scipy.ndimage`, as an index map.
//!
//! scipy pads each line (`NI_ExtendLine`) before correlating. For the three
//! periodic modes the pad continues periodically when it is longer than the
//! line, which is what matters for axes shorter than the kernel radius; all of
//! it reduces to "which input sample does padded position i copy".

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `d c b a | a b c d | d c b a` (half-sample symmetric), scipy's default.
    Reflect,
    /// `a a a a | a b c d | d d d d`.
    Nearest,
    /// `d c b | a b c d | c b a` (whole-sample symmetric); a 1-sample line acts as nearest.
    Mirror,
    /// `k k k k | a b c d | k k k k` with k = cval.
    Constant,
    /// `a b c d | a b c d | a b c d`.
    Wrap,
}

crate::choice::named_choices!(Mode {
    Reflect => "reflect": "d c b a | a b c d | d c b a (half-sample symmetric), scipy's default",
    Nearest => "nearest": "a a a a | a b c d | d d d d",
    Mirror => "mirror": "d c b | a b c d | c b a (whole-sample symmetric)",
    Constant => "constant": "k k k k | a b c d | k k k k with k = --cval",
    Wrap => "wrap": "a b c d | a b c d | a b c d",
});

impl Mode {
    /// Every mode, for the tests that try each.
    pub const EVERY: [Mode; 5] = [
        Mode::Reflect,
        Mode::Nearest,
        Mode::Mirror,
        Mode::Constant,
        Mode::Wrap,
    ];

    /// The sample of a line of length `n` that padded position `i` (may be
    /// negative or ≥ n) copies; `None` means the constant `cval`.
    pub fn source(self, i: isize, n: usize) -> Option<usize> {
        let n = n as isize;
        if (0..n).contains(&i) {
            return Some(i as usize);
        }
        let j = match self {
            Mode::Constant => return None,
            Mode::Nearest => i.clamp(0, n - 1),
            Mode::Wrap => i.rem_euclid(n),
            Mode::Reflect => {
                let m = i.rem_euclid(2 * n);
                if m >= n {
                    2 * n - 1 - m
                } else {
                    m
                }
            }
            Mode::Mirror if n == 1 => 0,
            Mode::Mirror => {
                let m = i.rem_euclid(2 * n - 2);
                if m >= n {
                    2 * n - 2 - m
                } else {
                    m
                }
            }
        };
        Some(j as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The padded line from -pad to n+pad as letters ('k' for cval).
    fn padded(mode: Mode, n: usize, pad: isize) -> String {
        (-pad..n as isize + pad)
            .map(|i| match mode.source(i, n) {
                Some(j) => (b'a' + j as u8) as char,
                None => 'k',
            })
            .collect()
    }

    #[test]
    fn patterns_match_scipy_docs() {
        assert_eq!(padded(Mode::Reflect, 4, 4), "dcbaabcddcba");
        assert_eq!(padded(Mode::Mirror, 4, 3), "dcbabcdcba");
        assert_eq!(padded(Mode::Nearest, 4, 2), "aaabcddd");
        assert_eq!(padded(Mode::Wrap, 4, 3), "bcdabcdabc");
        assert_eq!(padded(Mode::Constant, 4, 2), "kkabcdkk");
    }

    #[test]
    fn pads_longer_than_the_line_continue_periodically() {
        // NI_ExtendLine keeps copying from what it already wrote.
        assert_eq!(padded(Mode::Reflect, 3, 7), "aabccbaabccbaabcc");
        assert_eq!(padded(Mode::Mirror, 3, 6), "cbabcbabcbabcba");
        assert_eq!(padded(Mode::Wrap, 2, 5), "babababababa");
        assert_eq!(padded(Mode::Reflect, 1, 3), "aaaaaaa");
        assert_eq!(padded(Mode::Mirror, 1, 3), "aaaaaaa");
        assert_eq!(padded(Mode::Mirror, 2, 4), "ababababab");
    }

    #[test]
    fn parses_every_mode_and_rejects_others() {
        for m in Mode::EVERY {
            assert_eq!(crate::choice::Choice::name(m).parse::<Mode>().unwrap(), m);
        }
        assert!("grid-wrap".parse::<Mode>().is_err());
    }
}
