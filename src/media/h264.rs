//! H.264 Annex B facts edgecam needs (ITU-T H.264 §7.3, §B.1): NAL unit iteration,
//! IDR detection and the `profile-level-id` of the SPS (RFC 6184 §8.1).

/// NAL unit type of an IDR slice (H.264 Table 7-1).
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;

/// Iterates the NAL units (without start codes) of an Annex B byte-stream.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |next| next - 3);
        // A 4-byte start code leaves one zero byte at the end of the previous unit.
        while end > s && data[end - 1] == 0 && n + 1 < starts.len() {
            end -= 1;
        }
        units.push(&data[s..end]);
    }
    units.into_iter().filter(|u| !u.is_empty())
}

/// NAL unit type (low 5 bits of the header byte).
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |h| h & 0x1f)
}

/// Whether an access unit is a random access point: it holds an IDR slice and both
/// SPS and PPS, so a decoder can start there.
pub fn is_self_contained_idr(au: &[u8]) -> bool {
    let (mut idr, mut sps, mut pps) = (false, false, false);
    for nal in nal_units(au) {
        match nal_type(nal) {
            NAL_IDR => idr = true,
            NAL_SPS => sps = true,
            NAL_PPS => pps = true,
            _ => {}
        }
    }
    idr && sps && pps
}

/// `profile-level-id` (RFC 6184 §8.1) for SDP, from the first SPS in `au`: six lowercase
/// hex digits of `profile_idc`, `profile-iop` and `level_idc`.
///
/// The profile is normalised the way browsers name it, because answerers match
/// `profile_idc` and `profile-iop` exactly: Baseline with `constraint_set1_flag` is
/// Constrained Baseline, `42e0xx` (x264 writes `42c0xx` for the same stream); other
/// profiles get a zero `profile-iop` (`4d00xx`, `6400xx`). The level is the encoder's.
pub fn profile_level_id(au: &[u8]) -> Option<String> {
    let sps = nal_units(au).find(|n| nal_type(n) == NAL_SPS)?;
    let b = sps.get(1..4)?;
    let (profile_idc, constraints, level_idc) = (b[0], b[1], b[2]);
    let iop = match profile_idc {
        66 if constraints & 0x40 != 0 => 0xe0,
        _ => 0x00,
    };
    Some(format!("{profile_idc:02x}{iop:02x}{level_idc:02x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AU: &[u8] = &[
        0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xaa, // SPS
        0, 0, 0, 1, 0x68, 0xce, 0x38, 0x80, // PPS
        0, 0, 1, 0x65, 0x88, 0x84, 0x00, // IDR
    ];

    #[test]
    fn splits_nal_units_with_3_and_4_byte_start_codes() {
        let units: Vec<_> = nal_units(AU).collect();
        assert_eq!(units.len(), 3);
        assert_eq!(units[0], &[0x67, 0x42, 0xc0, 0x1f, 0xaa]);
        assert_eq!(units[1], &[0x68, 0xce, 0x38, 0x80]);
        assert_eq!(units[2], &[0x65, 0x88, 0x84, 0x00]);
    }

    #[test]
    fn recognises_self_contained_idr_and_profile() {
        assert!(is_self_contained_idr(AU));
        assert_eq!(
            profile_level_id(AU).as_deref(),
            Some("42e01f"),
            "x264's 42c0 is constrained baseline"
        );
        let delta = [0, 0, 0, 1, 0x41, 0x9a, 0x00];
        assert!(!is_self_contained_idr(&delta));
        assert_eq!(profile_level_id(&delta), None);
        let high = [0, 0, 0, 1, 0x67, 0x64, 0x00, 0x28];
        assert_eq!(profile_level_id(&high).as_deref(), Some("640028"));
        let baseline = [0, 0, 0, 1, 0x67, 0x42, 0x80, 0x1e];
        assert_eq!(profile_level_id(&baseline).as_deref(), Some("42001e"));
        // IDR without parameter sets is not a place a new viewer can start.
        assert!(!is_self_contained_idr(&[0, 0, 1, 0x65, 0x88]));
    }
}
