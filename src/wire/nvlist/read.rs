//! Decoding a packed nvlist: every length is checked against the bytes
//! that remain before anything is allocated, nesting is capped at
//! [`MAX_DEPTH`], descriptors are refused, and nothing panics.

use std::collections::HashSet;

use super::*;

impl NvList {
    /// Decodes a packed nvlist that fills `bytes` exactly (one
    /// SOCK_SEQPACKET record from bhyve).
    pub fn unpack(bytes: &[u8]) -> Result<NvList, NvError> {
        let mut r = Reader {
            buf: bytes,
            pos: 0,
            big: false,
        };
        let flags = r.header(true)?;
        let pairs = r.body(flags, 0, End::Input)?;
        Ok(NvList { flags, pairs })
    }
}

/// What ends a list body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// The end of the input (the root list).
    Input,
    /// `NVLIST_UP` (a nested nvlist), opened at the given offset.
    Up(usize),
    /// `NVLIST_ARRAY_NEXT` (an nvlist array element), opened at the offset.
    ArrayNext(usize),
}

/// A pair's header, checked against the input.
struct PairHeader {
    offset: usize,
    ty: u8,
    name: String,
    datasize: u64,
    nitems: u64,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next `n` bytes, or `Truncated` naming `offset` and `what`.
    fn take(&mut self, n: u64, offset: usize, what: &'static str) -> Result<&'a [u8], NvError> {
        let have = self.remaining();
        match usize::try_from(n) {
            Ok(n) if n <= have => {
                let s = &self.buf[self.pos..self.pos + n];
                self.pos += n;
                Ok(s)
            }
            _ => Err(NvError::Truncated {
                offset,
                what,
                need: n,
                have,
            }),
        }
    }

    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.big {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }

    fn u64(&self, b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        if self.big {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }

    /// Reads an nvlist header; returns the list's public flags. The root
    /// header sets the byte order; nested ones must agree with it.
    fn header(&mut self, root: bool) -> Result<u8, NvError> {
        let offset = self.pos;
        let h = self.take(HEADER_SIZE as u64, offset, "nvlist header")?;
        if h[0] != MAGIC {
            return Err(NvError::BadMagic {
                offset,
                magic: h[0],
            });
        }
        if h[1] != VERSION {
            return Err(NvError::BadVersion {
                offset,
                version: h[1],
            });
        }
        let flags = h[2];
        if flags & !(PUBLIC_FLAGS | FLAG_BIG_ENDIAN) != 0 {
            return Err(NvError::BadFlags { offset, flags });
        }
        let big = flags & FLAG_BIG_ENDIAN != 0;
        if root {
            self.big = big;
        } else if big != self.big {
            return Err(NvError::MixedEndian { offset });
        }
        let count = self.u64(&h[3..11]);
        if count != 0 {
            return Err(NvError::Descriptors { offset, count });
        }
        let size = self.u64(&h[11..19]);
        let actual = self.remaining();
        if size != actual as u64 {
            return Err(NvError::SizeMismatch {
                offset,
                size,
                actual,
            });
        }
        Ok(flags & PUBLIC_FLAGS)
    }

    fn pair_header(&mut self) -> Result<PairHeader, NvError> {
        let offset = self.pos;
        let h = self.take(PAIR_HEADER_SIZE as u64, offset, "nvpair header")?;
        let t = h[0];
        if !matches!(
            t,
            ty::NULL..=ty::DESCRIPTOR_ARRAY | ty::NVLIST_ARRAY_NEXT | ty::NVLIST_UP
        ) {
            return Err(NvError::UnknownType { offset, ty: t });
        }
        let namesize = self.u16(&h[1..3]);
        let datasize = self.u64(&h[3..11]);
        let nitems = self.u64(&h[11..19]);
        if namesize == 0 || usize::from(namesize) > NAME_MAX {
            return Err(NvError::BadNameSize { offset, namesize });
        }
        let raw = self.take(u64::from(namesize), offset, "nvpair name")?;
        let (last, body) = raw.split_last().unwrap_or((&1, &[]));
        if *last != 0 || body.contains(&0) {
            return Err(NvError::NameNotTerminated { offset, namesize });
        }
        let name = std::str::from_utf8(body)
            .map_err(|_| NvError::InvalidUtf8 {
                offset,
                what: "name".into(),
            })?
            .to_owned();
        let remaining = self.remaining();
        if datasize > remaining as u64 {
            return Err(NvError::DataBeyondInput {
                offset,
                name,
                datasize,
                remaining,
            });
        }
        Ok(PairHeader {
            offset,
            ty: t,
            name,
            datasize,
            nitems,
        })
    }

    /// Reads pairs until `end`; `flags` are the list's (for duplicates).
    fn body(&mut self, flags: u8, depth: usize, end: End) -> Result<Vec<(String, Value)>, NvError> {
        let mut pairs = Vec::new();
        let mut seen = HashSet::new();
        loop {
            if self.remaining() == 0 {
                return match end {
                    End::Input => Ok(pairs),
                    End::Up(opened) => Err(NvError::Unterminated {
                        offset: self.pos,
                        opened,
                        marker: "NVLIST_UP",
                    }),
                    End::ArrayNext(opened) => Err(NvError::Unterminated {
                        offset: self.pos,
                        opened,
                        marker: "NVLIST_ARRAY_NEXT",
                    }),
                };
            }
            let p = self.pair_header()?;
            if p.ty == ty::NVLIST_UP || p.ty == ty::NVLIST_ARRAY_NEXT {
                let expected = matches!(
                    (p.ty, end),
                    (ty::NVLIST_UP, End::Up(_)) | (ty::NVLIST_ARRAY_NEXT, End::ArrayNext(_))
                );
                if !expected || p.datasize != 0 || p.nitems != 0 {
                    return Err(NvError::UnexpectedMarker {
                        offset: p.offset,
                        marker: type_name(p.ty),
                    });
                }
                return Ok(pairs);
            }
            if flags & FLAG_NO_UNIQUE == 0 && !seen.insert(NvList::name_key(flags, &p.name)) {
                return Err(NvError::DuplicateName {
                    offset: p.offset,
                    name: p.name,
                });
            }
            let offset = p.offset;
            let value = self.value(&p, depth)?;
            debug_assert!(self.pos > offset);
            pairs.push((p.name, value));
        }
    }

    fn bad_size(p: &PairHeader, expected: &'static str) -> NvError {
        NvError::BadDataSize {
            offset: p.offset,
            name: p.name.clone(),
            ty: type_name(p.ty),
            datasize: p.datasize,
            expected,
        }
    }

    fn bad_items(p: &PairHeader) -> NvError {
        NvError::BadItemCount {
            offset: p.offset,
            name: p.name.clone(),
            ty: type_name(p.ty),
            nitems: p.nitems,
            datasize: p.datasize,
        }
    }

    fn bool_byte(p: &PairHeader, b: u8) -> Result<bool, NvError> {
        match b {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(NvError::BadBool {
                offset: p.offset,
                name: p.name.clone(),
                value,
            }),
        }
    }

    fn utf8(p: &PairHeader, b: &[u8]) -> Result<String, NvError> {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| NvError::InvalidUtf8 {
                offset: p.offset,
                what: format!("value of {:?}", p.name),
            })
    }

    fn value(&mut self, p: &PairHeader, depth: usize) -> Result<Value, NvError> {
        let scalar = !matches!(
            p.ty,
            ty::BOOL_ARRAY
                | ty::NUMBER_ARRAY
                | ty::STRING_ARRAY
                | ty::NVLIST_ARRAY
                | ty::DESCRIPTOR_ARRAY
        );
        if scalar && p.nitems != 0 {
            return Err(Self::bad_items(p));
        }
        let what = "nvpair data";
        match p.ty {
            ty::NULL => {
                if p.datasize != 0 {
                    return Err(Self::bad_size(p, "0"));
                }
                Ok(Value::Null)
            }
            ty::BOOL => {
                if p.datasize != 1 {
                    return Err(Self::bad_size(p, "1"));
                }
                let b = self.take(1, p.offset, what)?[0];
                Self::bool_byte(p, b).map(Value::Bool)
            }
            ty::NUMBER => {
                if p.datasize != 8 {
                    return Err(Self::bad_size(p, "8"));
                }
                let b = self.take(8, p.offset, what)?;
                Ok(Value::Number(self.u64(b)))
            }
            ty::STRING => {
                if p.datasize == 0 {
                    return Err(Self::bad_size(p, "at least 1"));
                }
                let b = self.take(p.datasize, p.offset, what)?;
                let (last, body) = b.split_last().unwrap_or((&1, &[]));
                if *last != 0 || body.contains(&0) {
                    return Err(NvError::StringNotTerminated {
                        offset: p.offset,
                        name: p.name.clone(),
                    });
                }
                Self::utf8(p, body).map(Value::String)
            }
            ty::BINARY => {
                if p.datasize == 0 {
                    return Err(Self::bad_size(p, "at least 1"));
                }
                let b = self.take(p.datasize, p.offset, what)?;
                Ok(Value::Binary(b.to_vec()))
            }
            ty::DESCRIPTOR | ty::DESCRIPTOR_ARRAY => Err(NvError::Descriptor {
                offset: p.offset,
                name: p.name.clone(),
            }),
            ty::NVLIST => {
                // libnv puts the nested list's packed size here; it only
                // has to be non-zero and within the input.
                if p.datasize == 0 {
                    return Err(Self::bad_size(p, "at least 1"));
                }
                self.check_depth(p, depth)?;
                let opened = self.pos;
                let flags = self.header(false)?;
                let pairs = self.body(flags, depth + 1, End::Up(opened))?;
                Ok(Value::NvList(NvList { flags, pairs }))
            }
            ty::BOOL_ARRAY => {
                if p.nitems == 0 || p.datasize != p.nitems {
                    return Err(Self::bad_items(p));
                }
                let b = self.take(p.datasize, p.offset, what)?;
                b.iter()
                    .map(|&x| Self::bool_byte(p, x))
                    .collect::<Result<_, _>>()
                    .map(Value::BoolArray)
            }
            ty::NUMBER_ARRAY => {
                if p.nitems == 0 || p.nitems.checked_mul(8) != Some(p.datasize) {
                    return Err(Self::bad_items(p));
                }
                let b = self.take(p.datasize, p.offset, what)?;
                Ok(Value::NumberArray(
                    b.chunks_exact(8).map(|c| self.u64(c)).collect(),
                ))
            }
            ty::STRING_ARRAY => {
                // Each string takes at least its NUL, so a count above the
                // data size is refused before anything is allocated.
                if p.nitems == 0 || p.nitems > p.datasize {
                    return Err(Self::bad_items(p));
                }
                let b = self.take(p.datasize, p.offset, what)?;
                let Some((&0, body)) = b.split_last() else {
                    return Err(NvError::StringNotTerminated {
                        offset: p.offset,
                        name: p.name.clone(),
                    });
                };
                if body.split(|&c| c == 0).count() as u64 != p.nitems {
                    return Err(Self::bad_items(p));
                }
                body.split(|&c| c == 0)
                    .map(|s| Self::utf8(p, s))
                    .collect::<Result<_, _>>()
                    .map(Value::StringArray)
            }
            ty::NVLIST_ARRAY => {
                // Each element takes at least a header and a marker: check
                // the count against the input before allocating for it.
                let fits = usize::try_from(p.nitems)
                    .ok()
                    .and_then(|n| n.checked_mul(MIN_ARRAY_ELEMENT))
                    .is_some_and(|need| need <= self.remaining());
                if p.nitems == 0 || !fits {
                    return Err(Self::bad_items(p));
                }
                self.check_depth(p, depth)?;
                let n = p.nitems as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    let opened = self.pos;
                    let flags = self.header(false)?;
                    let pairs = self.body(flags, depth + 1, End::ArrayNext(opened))?;
                    items.push(NvList { flags, pairs });
                }
                Ok(Value::NvListArray(items))
            }
            // pair_header admits no other type, and markers are handled by
            // body.
            t => Err(NvError::UnknownType {
                offset: p.offset,
                ty: t,
            }),
        }
    }

    fn check_depth(&self, p: &PairHeader, depth: usize) -> Result<(), NvError> {
        if depth + 1 > MAX_DEPTH {
            return Err(NvError::TooDeep {
                offset: p.offset,
                name: p.name.clone(),
                max: MAX_DEPTH,
            });
        }
        Ok(())
    }
}
