//! A WHEP `PATCH` body (`application/trickle-ice-sdpfrag`, RFC 8840 §9) as a caller
//! sends it: `edgecam::whep::parse_sdpfrag` either refuses it or yields at most 50
//! candidates, each an `a=candidate` line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(frag) = edgecam::whep::parse_sdpfrag(text)
    {
        assert!(frag.candidates.len() <= edgecam::whep::MAX_PATCH_CANDIDATES);
        assert!(
            frag.candidates
                .iter()
                .all(|c| c.candidate.starts_with("candidate"))
        );
    }
});
