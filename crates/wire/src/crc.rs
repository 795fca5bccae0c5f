//! Joining CRC32Cs: the CRC32C of `A‖B` from those of `A` and `B`, so a
//! whole file's digest follows from its blocks' without reading it again.
//!
//! The shift by `B`'s length is a multiplication by `x^(8·len)` modulo the
//! Castagnoli polynomial; [`CrcShift`] computes that factor once per length,
//! so joining many blocks of one size costs one 32-step multiplication
//! each, not the `O(log len)` matrix products of a general combine.

/// The Castagnoli polynomial, bit-reflected.
const POLY: u32 = 0x82F6_3B78;

/// `a · b` modulo the polynomial, both bit-reflected (`1 << 31` is 1).
fn mul(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    let mut bit = 1u32 << 31;
    while bit != 0 {
        if a & bit != 0 {
            product ^= b;
        }
        bit >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    product
}

/// `x^(8·len)` modulo the polynomial.
fn shift_factor(len: u64) -> u32 {
    // x^(2^k) for k = 3 (a byte is x^8), squared for each further bit.
    let mut square = mul(1 << 30, 1 << 30); // x^2
    square = mul(square, square); // x^4
    square = mul(square, square); // x^8
    let mut factor = 1u32 << 31; // x^0
    let mut n = len;
    while n != 0 {
        if n & 1 != 0 {
            factor = mul(square, factor);
        }
        square = mul(square, square);
        n >>= 1;
    }
    factor
}

/// Joins CRC32Cs across a piece of a fixed length.
///
/// ```
/// use fileuploader_wire::CrcShift;
///
/// let (a, b) = (b"hello ", b"world");
/// let joined = CrcShift::new(b.len() as u64).join(crc32c::crc32c(a), crc32c::crc32c(b));
/// assert_eq!(joined, crc32c::crc32c(b"hello world"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrcShift {
    len: u64,
    factor: u32,
}

impl CrcShift {
    /// For pieces of `len` bytes.
    pub fn new(len: u64) -> Self {
        CrcShift {
            len,
            factor: shift_factor(len),
        }
    }

    /// The length of the pieces it joins.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it joins empty pieces (which change nothing).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The CRC32C of `A‖B`, from `a` = CRC32C(`A`) and `b` = CRC32C(`B`),
    /// `B` being [`len`](Self::len) bytes long.
    pub fn join(&self, a: u32, b: u32) -> u32 {
        mul(self.factor, a) ^ b
    }
}

/// The CRC32C of `A‖B` from those of `A` and `B`, `B` being `len_b` bytes
/// long.
pub fn crc32c_join(a: u32, b: u32, len_b: u64) -> u32 {
    CrcShift::new(len_b).join(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_like_the_crc_of_the_concatenation() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for cut in [0, 1, 7, 4096, 10_240, 65_537, 70_000] {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                crc32c_join(crc32c::crc32c(a), crc32c::crc32c(b), b.len() as u64),
                crc32c::crc32c(&data),
                "cut at {cut}"
            );
        }
        let shift = CrcShift::new(10_240);
        let mut crc = 0;
        for block in data.chunks(10_240).take(6) {
            crc = shift.join(crc, crc32c::crc32c(block));
        }
        assert_eq!(crc, crc32c::crc32c(&data[..61_440]));
        assert_eq!(
            crc32c_join(0xdead_beef, 0x1234_5678, 1 << 40),
            crc32c::crc32c_combine(0xdead_beef, 0x1234_5678, 1 << 40)
        );
    }
}
