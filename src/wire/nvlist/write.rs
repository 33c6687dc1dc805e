//! Encoding an nvlist as libnv's `nvlist_pack` does, on a host of either
//! byte order (the tests that play bhyve use it).

use std::collections::HashSet;

use super::*;

impl NvList {
    /// Encodes the list as libnv's `nvlist_pack` would on a host of byte
    /// order `endian`.
    pub fn pack(&self, endian: Endian) -> Result<Vec<u8>, PackError> {
        let mut w = Writer {
            out: Vec::new(),
            big: endian == Endian::Big,
            headers: Vec::new(),
        };
        w.list(self, 0)?;
        let total = w.out.len();
        // Every header's size is what follows it in the whole buffer.
        for at in std::mem::take(&mut w.headers) {
            let size = (total - at - HEADER_SIZE) as u64;
            w.put_u64_at(at + 11, size);
        }
        Ok(w.out)
    }
}

struct Writer {
    out: Vec<u8>,
    big: bool,
    /// Offsets of every nvlist header, patched with their sizes at the end.
    headers: Vec<usize>,
}

impl Writer {
    fn u16(&mut self, v: u16) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }

    fn u64(&mut self, v: u64) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out.extend_from_slice(&b);
    }

    fn put_u64_at(&mut self, at: usize, v: u64) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.out[at..at + 8].copy_from_slice(&b);
    }

    fn header(&mut self, flags: u8) {
        self.headers.push(self.out.len());
        let f = (flags & PUBLIC_FLAGS) | if self.big { FLAG_BIG_ENDIAN } else { 0 };
        self.out.extend_from_slice(&[MAGIC, VERSION, f]);
        self.u64(0); // descriptors
        self.u64(0); // size, patched by pack
    }

    /// A pair header and name; returns the offset of the data size field.
    fn pair_header(&mut self, t: u8, name: &str, datasize: u64, nitems: u64) -> usize {
        self.out.push(t);
        // Checked by `check_name`: at most NAME_MAX - 1 bytes.
        self.u16((name.len() + 1) as u16);
        let at = self.out.len();
        self.u64(datasize);
        self.u64(nitems);
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        at
    }

    fn marker(&mut self, t: u8) {
        self.pair_header(t, "", 0, 0);
    }

    fn check_name(name: &str) -> Result<(), PackError> {
        if name.as_bytes().contains(&0) {
            return Err(PackError::NulInName { name: name.into() });
        }
        if name.len() >= NAME_MAX {
            return Err(PackError::NameTooLong { len: name.len() });
        }
        Ok(())
    }

    fn check_str(name: &str, s: &str) -> Result<(), PackError> {
        if s.as_bytes().contains(&0) {
            return Err(PackError::NulInString { name: name.into() });
        }
        Ok(())
    }

    fn list(&mut self, list: &NvList, depth: usize) -> Result<(), PackError> {
        self.header(list.flags);
        let mut seen = HashSet::new();
        for (name, value) in &list.pairs {
            Self::check_name(name)?;
            if list.flags & FLAG_NO_UNIQUE == 0 && !seen.insert(NvList::name_key(list.flags, name))
            {
                return Err(PackError::DuplicateName { name: name.clone() });
            }
            self.pair(name, value, depth)?;
        }
        Ok(())
    }

    fn pair(&mut self, name: &str, value: &Value, depth: usize) -> Result<(), PackError> {
        let t = value.type_number();
        let empty = || PackError::Empty {
            name: name.into(),
            ty: type_name(t),
        };
        let too_deep = || PackError::TooDeep {
            name: name.into(),
            max: MAX_DEPTH,
        };
        match value {
            Value::Null => {
                self.pair_header(t, name, 0, 0);
            }
            Value::Bool(b) => {
                self.pair_header(t, name, 1, 0);
                self.out.push(u8::from(*b));
            }
            Value::Number(n) => {
                self.pair_header(t, name, 8, 0);
                self.u64(*n);
            }
            Value::String(s) => {
                Self::check_str(name, s)?;
                self.pair_header(t, name, s.len() as u64 + 1, 0);
                self.out.extend_from_slice(s.as_bytes());
                self.out.push(0);
            }
            Value::Binary(b) => {
                if b.is_empty() {
                    return Err(empty());
                }
                self.pair_header(t, name, b.len() as u64, 0);
                self.out.extend_from_slice(b);
            }
            Value::NvList(child) => {
                if depth + 1 > MAX_DEPTH {
                    return Err(too_deep());
                }
                let at = self.pair_header(t, name, 0, 0);
                let start = self.out.len();
                self.list(child, depth + 1)?;
                // libnv's datasize for a nested list: its packed size,
                // without its closing marker.
                let size = (self.out.len() - start) as u64;
                self.put_u64_at(at, size);
                self.marker(ty::NVLIST_UP);
            }
            Value::BoolArray(v) => {
                if v.is_empty() {
                    return Err(empty());
                }
                self.pair_header(t, name, v.len() as u64, v.len() as u64);
                self.out.extend(v.iter().map(|&b| u8::from(b)));
            }
            Value::NumberArray(v) => {
                if v.is_empty() {
                    return Err(empty());
                }
                self.pair_header(t, name, 8 * v.len() as u64, v.len() as u64);
                for &n in v {
                    self.u64(n);
                }
            }
            Value::StringArray(v) => {
                if v.is_empty() {
                    return Err(empty());
                }
                for s in v {
                    Self::check_str(name, s)?;
                }
                let size: usize = v.iter().map(|s| s.len() + 1).sum();
                self.pair_header(t, name, size as u64, v.len() as u64);
                for s in v {
                    self.out.extend_from_slice(s.as_bytes());
                    self.out.push(0);
                }
            }
            Value::NvListArray(v) => {
                if v.is_empty() {
                    return Err(empty());
                }
                if depth + 1 > MAX_DEPTH {
                    return Err(too_deep());
                }
                self.pair_header(t, name, 0, v.len() as u64);
                for item in v {
                    self.list(item, depth + 1)?;
                    self.marker(ty::NVLIST_ARRAY_NEXT);
                }
            }
        }
        Ok(())
    }
}
