//! TEAP TLVs (ragw_teap::tlv): parsing arbitrary octets within the default limits never panics,
//! nested TLV lists parse cleanly or fail cleanly, and known TLVs re-encode to octets that parse
//! back to the same TLVs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ragw_teap::tlv::{self, Limits, Tlv};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(parsed) = tlv::parse_tlvs(data, limits) else {
        return;
    };
    assert!(
        parsed.tlvs.len() + parsed.unsupported_mandatory.len() + parsed.skipped_optional.len()
            <= limits.max_count
    );
    for tlv in &parsed.tlvs {
        if let Some(Ok(nested)) = tlv.parse_nested(limits) {
            round_trip(&nested.tlvs, limits);
        }
        let _ = tlv.mandatory();
    }
    if let Some(&first) = parsed.unsupported_mandatory.first() {
        let nak = tlv::nak_for(first);
        let bytes = nak.encode().expect("a NAK encodes");
        assert_eq!(
            tlv::parse_tlvs(&bytes, limits).map(|p| p.tlvs),
            Ok(vec![nak])
        );
    }
    round_trip(&parsed.tlvs, limits);
});

fn round_trip(tlvs: &[Tlv], limits: Limits) {
    // Parsed values fit their length fields, so encoding cannot fail.
    let bytes = tlv::encode_tlvs(tlvs).expect("parsed TLVs re-encode");
    let reparsed = tlv::parse_tlvs(&bytes, limits).expect("encoded TLVs parse");
    assert_eq!(
        reparsed.tlvs, tlvs,
        "TLVs changed in an encode/parse round trip"
    );
    assert!(reparsed.unsupported_mandatory.is_empty());
    assert!(reparsed.skipped_optional.is_empty());
}
