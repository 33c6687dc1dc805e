//! Arbitrary bytes as bhyve's configuration record: decoding never panics,
//! and whatever decodes re-encodes, in the input's byte order, to a record
//! that decodes to the same list and re-encodes to the same bytes.
#![no_main]

use caploop::wire::nvlist::{Endian, HelperConfig, NvList, FLAG_BIG_ENDIAN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = HelperConfig::from_packed(data);
    match NvList::unpack(data) {
        Ok(list) => {
            let endian = if data[2] & FLAG_BIG_ENDIAN != 0 {
                Endian::Big
            } else {
                Endian::Little
            };
            let packed = list.pack(endian).expect("a decoded list re-encodes");
            let again = NvList::unpack(&packed).expect("a re-encoded list decodes");
            assert_eq!(again, list);
            assert_eq!(again.pack(endian).unwrap(), packed);
            assert_eq!(cfg, HelperConfig::from_nvlist(&list));
            if let Ok(c) = cfg {
                // The typed view round-trips through what bhyve would send.
                let sent = c.to_nvlist().pack(Endian::Little).unwrap();
                let back = HelperConfig::from_packed(&sent).unwrap();
                assert_eq!(
                    (back.hostfwd, back.open, back.vmname),
                    (c.hostfwd, c.open, c.vmname)
                );
            }
        }
        Err(e) => {
            assert!(cfg.is_err());
            assert!(!e.to_string().is_empty());
        }
    }
});
