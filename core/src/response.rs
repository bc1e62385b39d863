//! Packets the proxy itself sends to a client: login disconnects, status responses, pongs and the legacy
//! ping answer.

use crate::codec;

/// A JSON text component holding `text`.
pub fn text_component(text: &str) -> String {
    serde_json::json!({ "text": text }).to_string()
}

/// A Login Disconnect packet (clientbound, login state, id 0x00) with `reason` as a text component.
pub fn login_disconnect(reason: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(reason.len() + 16);
    codec::write_string(&mut body, &text_component(reason));
    let mut out = Vec::with_capacity(body.len() + 4);
    codec::write_frame(&mut out, 0x00, &body);
    out
}

/// The longest string vanilla clients read in a Status Response, and 1.7–1.12 clients in a Login
/// Disconnect, in UTF-16 code units: longer, and the client fails with a decode error instead of showing
/// the text.
pub const VANILLA_MAX_STRING: usize = 32767;

/// The longest Login Disconnect reason 1.13 and later clients read, in UTF-16 code units.
pub const VANILLA_MAX_KICK: usize = 262_144;

fn status_json(protocol: i32, motd: &str, online: u32, max: u32) -> String {
    serde_json::json!({
        "version": { "name": "nethergate", "protocol": protocol },
        "players": { "max": max, "online": online, "sample": [] },
        "description": { "text": motd },
    })
    .to_string()
}

/// Why vanilla clients cannot read `motd` as a status description (and so as a login disconnect reason,
/// which is shorter): the length of the longest status answer it can be part of, in UTF-16 code units, when
/// that is over [`VANILLA_MAX_STRING`]. `None` when it fits.
pub fn status_overflow(motd: &str) -> Option<usize> {
    let longest = status_json(i32::MIN, motd, u32::MAX, u32::MAX);
    Some(longest.encode_utf16().count()).filter(|&n| n > VANILLA_MAX_STRING)
}

/// The length of the text component `reason` is sent in as a login disconnect reason, in UTF-16 code
/// units (what [`VANILLA_MAX_STRING`] and [`VANILLA_MAX_KICK`] count).
pub fn kick_length(reason: &str) -> usize {
    text_component(reason).encode_utf16().count()
}

/// The first protocol version (1.13) whose clients read a Login Disconnect reason of up to
/// [`VANILLA_MAX_KICK`] units; older ones read [`VANILLA_MAX_STRING`].
pub const LONG_KICK_PROTOCOL: i32 = 393;

/// The longest login disconnect reason, in UTF-16 code units with its JSON, that a client of `protocol`
/// reads.
pub fn kick_limit(protocol: i32) -> usize {
    if protocol >= LONG_KICK_PROTOCOL {
        VANILLA_MAX_KICK
    } else {
        VANILLA_MAX_STRING
    }
}

/// `reason` cut at a character so that the text component it is sent in takes at most `limit` UTF-16
/// code units ([`kick_length`]); the whole of it when it fits. A reason from a plugin has no bound of
/// its own, and a client that cannot read the packet fails with a decode error instead of showing it.
pub fn fit_kick(reason: &str, limit: usize) -> &str {
    let mut units = kick_length("");
    for (i, c) in reason.char_indices() {
        // As serde_json escapes a string: two-character escapes, `\u00XX` for other controls.
        units += match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if u32::from(c) < 0x20 => 6,
            c => c.len_utf16(),
        };
        if units > limit {
            return &reason[..i];
        }
    }
    reason
}

/// What a configuration problem says of a message whose packet would be `length` UTF-16 code units long,
/// over the `limit` that `readers` read.
pub fn overflow_reason(what: &str, length: usize, limit: usize, readers: &str) -> String {
    format!(
        "too long: the {what} it is sent in would be {length} characters with its JSON (a `\"` or `\\` \
         takes two, a control character two or six, a character beyond U+FFFF two), over the {limit} \
         {readers} read; shorten it by {} characters",
        length.saturating_sub(limit)
    )
}

/// A Status Response packet (id 0x00) whose description is `motd`, answering a client of `protocol`.
pub fn status_response(protocol: i32, motd: &str, online: u32, max: u32) -> Vec<u8> {
    let json = status_json(protocol, motd, online, max);
    let mut body = Vec::with_capacity(json.len() + 3);
    codec::write_string(&mut body, &json);
    let mut out = Vec::with_capacity(body.len() + 4);
    codec::write_frame(&mut out, 0x00, &body);
    out
}

/// A Pong packet (id 0x01) echoing the ping payload.
pub fn pong(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 2);
    codec::write_frame(&mut out, 0x01, payload);
    out
}

/// Which legacy (pre-1.7) server-list ping a client sent, which decides the format of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyPing {
    /// `FE` alone: Beta 1.8 to 1.3, which read `motd§online§max`.
    Beta,
    /// `FE 01` (1.4, 1.5) or `FE 01 FA MC|PingHost` (1.6), which read the `§1` format with a protocol and a
    /// version name (and then show "outdated server" with the MOTD).
    V1_4,
}

/// The answer to a legacy ping: a kick packet (0xFF) whose UTF-16 text tells old clients the server needs
/// a newer version and shows `motd`, in the format the client's ping asks for (as vanilla answers).
pub fn legacy_ping_answer(ping: LegacyPing, motd: &str) -> Vec<u8> {
    let text = match ping {
        // `§` separates the fields: none may be in the MOTD.
        LegacyPing::Beta => format!("{}\u{a7}0\u{a7}0", motd.replace('\u{a7}', "")),
        LegacyPing::V1_4 => format!("\u{a7}1\u{0}127\u{0}1.7+\u{0}{motd}\u{0}0\u{0}0"),
    };
    legacy_kick(&text)
}

/// A pre-1.7 kick packet (0xFF, then the text as a [`write_legacy_string`]): what old clients show as
/// "Disconnected by server" with the text, and how legacy pings are answered.
pub fn legacy_kick(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + text.len() * 2);
    out.push(0xFF);
    write_legacy_string(&mut out, text);
    out
}

/// Appends `text` as the pre-1.7 protocol writes strings: a big-endian u16 count of UTF-16 units, then the
/// units big-endian (cut at 65,535 units).
pub fn write_legacy_string(out: &mut Vec<u8>, text: &str) {
    let units = text.encode_utf16().take(usize::from(u16::MAX));
    let len = units.clone().count() as u16;
    out.extend_from_slice(&len.to_be_bytes());
    for u in units {
        out.extend_from_slice(&u.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{read_frame, read_string, Parsed};

    #[test]
    fn login_disconnect_is_a_frame_holding_a_text_component() {
        let bytes = login_disconnect("Server \"down\"");
        let Ok(Parsed::Complete(frame, used)) = read_frame(&bytes, 1024) else {
            panic!("not a frame")
        };
        assert_eq!(used, bytes.len());
        assert_eq!(frame.id, 0);
        let Ok(Parsed::Complete(json, _)) = read_string(frame.body, 1024) else {
            panic!("not a string")
        };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["text"], "Server \"down\"");
    }

    #[test]
    fn status_response_carries_motd_and_client_protocol() {
        let bytes = status_response(765, "Maintenance", 0, 20);
        let Ok(Parsed::Complete(frame, _)) = read_frame(&bytes, 4096) else {
            panic!("not a frame")
        };
        let Ok(Parsed::Complete(json, _)) = read_string(frame.body, 4096) else {
            panic!("not a string")
        };
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["description"]["text"], "Maintenance");
        assert_eq!(v["version"]["protocol"], 765);
        assert_eq!(v["players"]["max"], 20);
    }

    fn kick_text(bytes: &[u8]) -> String {
        assert_eq!(bytes[0], 0xFF);
        let chars = u16::from_be_bytes([bytes[1], bytes[2]]) as usize;
        assert_eq!(bytes.len(), 3 + chars * 2);
        let units: Vec<u16> = bytes[3..]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16(&units).unwrap()
    }

    #[test]
    fn legacy_kick_is_0xff_and_a_utf16_string() {
        assert_eq!(legacy_kick("é!"), [0xFF, 0, 2, 0x00, 0xE9, 0x00, 0x21]);
        assert_eq!(
            kick_text(&legacy_kick("Outdated \u{1F600}")),
            "Outdated \u{1F600}"
        );
    }

    #[test]
    fn legacy_answer_is_a_utf16_kick_in_the_format_the_ping_asks_for() {
        assert_eq!(
            kick_text(&legacy_ping_answer(LegacyPing::V1_4, "hi")),
            "\u{a7}1\u{0}127\u{0}1.7+\u{0}hi\u{0}0\u{0}0"
        );
        // Beta 1.8 to 1.3 split on `§`: motd, online, max.
        let beta = kick_text(&legacy_ping_answer(LegacyPing::Beta, "Use \u{a7}new"));
        assert_eq!(
            beta.split('\u{a7}').collect::<Vec<_>>(),
            ["Use new", "0", "0"]
        );
    }

    #[test]
    fn a_kick_is_cut_to_what_the_client_reads() {
        assert_eq!(kick_limit(340), VANILLA_MAX_STRING); // 1.12.2
        assert_eq!(kick_limit(393), VANILLA_MAX_KICK); // 1.13
        let long = "a".repeat(40_000);
        let cut = fit_kick(&long, VANILLA_MAX_STRING);
        assert_eq!(kick_length(cut), VANILLA_MAX_STRING);
        assert_eq!(fit_kick(&long, VANILLA_MAX_KICK), long);
        // A quote takes two units: the last one that would pass the limit is left out whole.
        assert_eq!(kick_length("ab"), 13);
        assert_eq!(fit_kick("ab\"c", 14), "ab");
        assert_eq!(fit_kick("ab\"c", 15), "ab\"");
    }

    proptest::proptest! {
        #[test]
        fn a_cut_kick_fits_and_is_the_longest_prefix_that_does(
            reason in "(\\PC|[\\x00-\\x1f\"\\\\\u{10000}-\u{10ffff}]){0,40}",
            limit in 11usize..80,
        ) {
            let cut = fit_kick(&reason, limit);
            proptest::prop_assert!(reason.starts_with(cut));
            proptest::prop_assert!(kick_length(cut) <= limit);
            if let Some(next) = reason[cut.len()..].chars().next() {
                let longer = &reason[..cut.len() + next.len_utf8()];
                proptest::prop_assert!(kick_length(longer) > limit);
            }
        }
    }
}
