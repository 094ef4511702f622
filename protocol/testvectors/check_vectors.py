#!/usr/bin/env python3
"""A second implementation of Leak's packet format, from SPEC.md's text.

It rebuilds every packet of the forward and reply-block vectors in this
directory from the keys and randomness they list (SPEC.md §7 and §10),
processes each one hop by hop as a node would (§8), opens the reply as the
client would (§10), and compares every byte with the files. It shares no
code with the Rust crate: only SPEC.md and the `blake3` and `cryptography`
packages (pip install blake3 cryptography).

Usage: python3 protocol/testvectors/check_vectors.py [DIR]
Exits 0 and prints one line per file when every vector matches.
"""

import json
import pathlib
import sys

import blake3
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

# §2
VERSION = 3
MAX_HOPS = 5
KEY_LEN = 32
MAC_LEN = 16
TAG_LEN = 16
RI_LEN = 96
BETA_LEN = MAX_HOPS * RI_LEN
HEADER_LEN = 1 + 1 + KEY_LEN + BETA_LEN + MAC_LEN
PACKET_LEN = 4096
PAYLOAD_LEN = PACKET_LEN - HEADER_LEN
ZERO_CHECK_LEN = 16
MESSAGE_CAPACITY = PAYLOAD_LEN - ZERO_CHECK_LEN - 2
AAD = b"leak.sphinx v1 payload"

# §5 and §5.1
HOP_KEYS_CONTEXT = "leak.sphinx v3 2026-12 hop keys"
HOP_KEY_NAMES = ["stream", "mac", "layer", "tag"]
LIONESS_CONTEXT = "leak.lioness v2 2026-12 round keys"

CMD_RELAY, CMD_EXIT, CMD_MAILBOX = 1, 2, 3


def derive_key(context, material, length=KEY_LEN):
    return blake3.blake3(material, derive_key_context=context).digest(length=length)


def split_keys(output):
    return [output[i : i + KEY_LEN] for i in range(0, len(output), KEY_LEN)]


def keyed_hash(key, data):
    return blake3.blake3(data, key=key).digest()


def chacha20(key, length):
    """The ChaCha20 keystream: 96-bit zero nonce, block counter from 0."""
    # `cryptography` takes a 16-byte nonce: the 32-bit counter, then the
    # 96-bit nonce, little-endian; all zeros here.
    encryptor = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return encryptor.update(bytes(length))


def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def x25519(secret, public):
    shared = X25519PrivateKey.from_private_bytes(secret).exchange(
        X25519PublicKey.from_public_bytes(public)
    )
    assert shared != bytes(32)
    return shared


def x25519_base(secret):
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes_raw()


def hop_keys(shared, alpha, public):
    output = derive_key(HOP_KEYS_CONTEXT, shared + alpha + public, 4 * KEY_LEN)
    return dict(zip(HOP_KEY_NAMES, split_keys(output), strict=True))


def lioness_rounds(key):
    return split_keys(derive_key(LIONESS_CONTEXT, key, 4 * KEY_LEN))


def lioness_encrypt(key, block):
    k1, k2, k3, k4 = lioness_rounds(key)
    l, r = block[:KEY_LEN], block[KEY_LEN:]
    r = xor(r, chacha20(xor(l, k1), len(r)))
    l = xor(l, keyed_hash(k2, r))
    r = xor(r, chacha20(xor(l, k3), len(r)))
    l = xor(l, keyed_hash(k4, r))
    return l + r


def lioness_decrypt(key, block):
    k1, k2, k3, k4 = lioness_rounds(key)
    l, r = block[:KEY_LEN], block[KEY_LEN:]
    l = xor(l, keyed_hash(k4, r))
    r = xor(r, chacha20(xor(l, k3), len(r)))
    l = xor(l, keyed_hash(k2, r))
    r = xor(r, chacha20(xor(l, k1), len(r)))
    return l + r


def mac(key, version, hint, beta):
    return keyed_hash(key, bytes([version, hint]) + beta)[:MAC_LEN]


def frame(message):
    assert len(message) <= MESSAGE_CAPACITY
    body = len(message).to_bytes(2, "big") + message
    return body + bytes(PAYLOAD_LEN - len(body))


def unframe(payload):
    """§8 step 6, exit: the checked zeros, the length, the padding."""
    assert payload[PAYLOAD_LEN - ZERO_CHECK_LEN :] == bytes(ZERO_CHECK_LEN), "PayloadIntegrity"
    length = int.from_bytes(payload[:2], "big")
    assert length <= MESSAGE_CAPACITY, "Malformed"
    assert payload[2 + length :] == bytes(PAYLOAD_LEN - 2 - length), "Malformed"
    return payload[2 : 2 + length]


def seal(key, framed):
    return ChaCha20Poly1305(key).encrypt(bytes(12), framed, AAD)


def open_sealed(key, sealed):
    opened = ChaCha20Poly1305(key).decrypt(bytes(12), sealed, AAD)
    length = int.from_bytes(opened[:2], "big")
    assert length <= MESSAGE_CAPACITY
    return opened[2 : 2 + length]


def slot(command, hint=0, delay=0, address=bytes(32), alpha=bytes(32), gamma=bytes(16)):
    out = bytes([command, hint]) + delay.to_bytes(4, "big") + address + alpha + gamma
    return out + bytes(RI_LEN - len(out))


def build_header(hops, last_slot, randomness):
    """§7 steps 1-5; returns the header, each hop's keys, and the bytes used."""
    n = len(hops)
    pos = 0
    ephemerals = []
    for _ in range(n):
        ephemerals.append(randomness[pos : pos + 32])
        pos += 32
    pad = randomness[pos : pos + BETA_LEN - n * RI_LEN]
    pos += len(pad)
    alphas = [x25519_base(e) for e in ephemerals]
    keys = [
        hop_keys(x25519(e, hop["public"]), alpha, hop["public"])
        for e, alpha, hop in zip(ephemerals, alphas, hops)
    ]
    streams = [chacha20(k["stream"], BETA_LEN + RI_LEN) for k in keys]

    filler = b""
    for i in range(n - 1):
        filler = xor(filler + bytes(RI_LEN), streams[i][BETA_LEN - i * RI_LEN : BETA_LEN + RI_LEN])

    open_len = BETA_LEN - (n - 1) * RI_LEN
    beta = xor(last_slot + pad, streams[n - 1][:open_len]) + filler
    gamma = mac(keys[n - 1]["mac"], VERSION, hops[n - 1]["hint"], beta)
    for i in range(n - 2, -1, -1):
        r = slot(
            CMD_RELAY,
            hint=hops[i + 1]["hint"],
            delay=hops[i]["delay"],
            address=hops[i + 1]["id"],
            alpha=alphas[i + 1],
            gamma=gamma,
        )
        beta = xor(r + beta[: BETA_LEN - RI_LEN], streams[i][:BETA_LEN])
        gamma = mac(keys[i]["mac"], VERSION, hops[i]["hint"], beta)
    header = bytes([VERSION, hops[0]["hint"]]) + alphas[0] + beta + gamma
    return header, keys, pos


def process(packet, secret, public):
    """§8: one hop. Returns a dict shaped like a vector's processing step."""
    assert len(packet) == PACKET_LEN and packet[0] == VERSION
    hint = packet[1]
    alpha = packet[2:34]
    beta = packet[34 : 34 + BETA_LEN]
    gamma = packet[34 + BETA_LEN : HEADER_LEN]
    keys = hop_keys(x25519(secret, alpha), alpha, public)
    assert mac(keys["mac"], VERSION, hint, beta) == gamma, "bad MAC"
    opened = xor(beta + bytes(RI_LEN), chacha20(keys["stream"], BETA_LEN + RI_LEN))
    s = opened[:RI_LEN]
    assert s[86:] == bytes(10), "reserved bytes"
    delay = int.from_bytes(s[2:6], "big")
    payload = lioness_decrypt(keys["layer"], packet[HEADER_LEN:])
    step = {"replay_tag": keys["tag"].hex(), "delay_ms": delay}
    if s[0] == CMD_RELAY:
        nxt = bytes([VERSION, s[1]]) + s[38:70] + opened[RI_LEN:] + s[70:86] + payload
        step.update(result="forward", next_hop=s[6:38].hex(), packet=nxt.hex())
    elif s[0] == CMD_EXIT:
        assert s[1] == 0 and s[6:86] == bytes(80)
        step.update(result="exit", message=unframe(payload).hex())
    elif s[0] == CMD_MAILBOX:
        assert s[1] == 0 and s[38:86] == bytes(48)
        step.update(result="mailbox", mailbox=s[6:38].hex(), reply=payload.hex())
    else:
        raise AssertionError("unknown command")
    return step


def parse_hops(vector):
    hops = []
    for h in vector["hops"]:
        secret = bytes.fromhex(h["mix_secret"])
        public = bytes.fromhex(h["mix_public"])
        assert x25519_base(secret) == public
        hops.append(
            {
                "id": bytes.fromhex(h["node_id"]),
                "secret": secret,
                "public": public,
                "hint": h["key_hint"],
                "delay": h["delay_ms"],
            }
        )
    return hops


def check_processing(vector, hops, packet):
    for i, (hop, expected) in enumerate(zip(hops, vector["processing"], strict=True)):
        step = process(packet, hop["secret"], hop["public"])
        step["hop"] = i
        assert expected is None or step == expected, f"hop {i}: {step} != {expected}"
        if step["result"] == "forward":
            packet = bytes.fromhex(step["packet"])
    return step


def check_forward(vector):
    hops = parse_hops(vector)
    randomness = bytes.fromhex(vector["randomness"])
    message = bytes.fromhex(vector["message"])
    last = slot(CMD_EXIT, delay=hops[-1]["delay"])
    header, keys, used = build_header(hops, last, randomness)
    assert used == len(randomness)
    # §7 step 6: the framed message, then the layers, the last hop's first.
    payload = frame(message)
    for k in reversed(keys):
        payload = lioness_encrypt(k["layer"], payload)
    packet = header + payload
    assert packet.hex() == vector["packet"], "packet differs"
    last_step = check_processing(vector, hops, packet)
    assert last_step["message"] == vector["message"]
    # §14: one bit changed in the payload on the first link, even in the
    # padding the sender left, and the exit drops the packet.
    tampered = bytearray(packet)
    tampered[PACKET_LEN - 100] ^= 1
    try:
        check_processing({"processing": [None] * len(hops)}, hops, bytes(tampered))
    except AssertionError as failure:
        assert str(failure) == "PayloadIntegrity", failure
    else:
        raise AssertionError("a tampered payload was delivered")


def check_reply_block(vector):
    hops = parse_hops(vector)
    randomness = bytes.fromhex(vector["randomness"])
    mailbox = bytes.fromhex(vector["mailbox"])
    last = slot(CMD_MAILBOX, delay=hops[-1]["delay"], address=mailbox)
    header, keys, used = build_header(hops, last, randomness)
    k_reply = randomness[used : used + 32]
    assert used + 32 == len(randomness)
    block = hops[0]["id"] + header + k_reply
    assert block.hex() == vector["reply_block"], "reply block differs"
    # §10 using: the exit seals the message under k_reply.
    message = bytes.fromhex(vector["message"])
    sealed = seal(k_reply, frame(message)[: PAYLOAD_LEN - TAG_LEN])
    packet = header + sealed
    assert packet.hex() == vector["packet"], "reply packet differs"
    last_step = check_processing(vector, hops, packet)
    # §10 opening: the encryptions, the last hop's first.
    stored = bytes.fromhex(last_step["reply"])
    for k in reversed(keys):
        stored = lioness_encrypt(k["layer"], stored)
    assert open_sealed(k_reply, stored).hex() == vector["opened"] == vector["message"]


def main():
    directory = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).parent
    checks = {
        "forward-1-hop.json": check_forward,
        "forward-3-hops.json": check_forward,
        "forward-5-hops.json": check_forward,
        "reply-block-3-hops.json": check_reply_block,
    }
    for name, check in checks.items():
        vector = json.loads((directory / name).read_text())
        assert vector["version"] == VERSION, f"{name}: version {vector['version']}"
        check(vector)
        print(f"{name}: every byte reproduced")
    # The payload encodings (§11) carry a reply block whose header must be
    # this version's.
    payloads = json.loads((directory / "payloads.json").read_text())
    block = bytes.fromhex(payloads["leak"]["reply_block"])
    assert block[32] == VERSION and payloads["leak"]["reply_block"] in payloads["leak"]["encoded"]
    print(f"payloads.json: the leak's reply block is a version {VERSION} header")
    check_answers(payloads["answers"], payloads["leak"])
    print("payloads.json: the answer vectors re-derived (§11.1)")


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def check_answers(v, leak):
    capability = bytes.fromhex(v["capability"])
    inbox = derive_key("leak.answers v1 2026-12 inbox id", capability)
    assert inbox.hex() == v["inbox"], "inbox id"
    secret = X25519PrivateKey.from_private_bytes(bytes.fromhex(v["answer_secret"]))
    key = secret.public_key().public_bytes_raw()
    assert key.hex() == v["answer_key"], "answer key"
    # The answerable leak: the plain leak's bytes, then key and inbox.
    assert v["leak_encoded"] == leak["encoded"] + key.hex() + inbox.hex(), "leak with answer-to"
    # The fetch: version, kind 5, capability, ack, the reply block as bytes.
    block = bytes.fromhex(leak["reply_block"])
    fetch = bytes([1, 5]) + capability + varint(v["fetch"]["ack"]) + varint(len(block)) + block
    assert fetch.hex() == v["fetch"]["encoded"], "fetch encoding"
    # The sealed answer opens with the secret to the stated answer.
    sealed = bytes.fromhex(v["answer"]["sealed"])
    ephemeral = sealed[:32]
    shared = secret.exchange(X25519PublicKey.from_public_bytes(ephemeral))
    k = derive_key("leak.answers v1 2026-12 answer seal", shared + ephemeral + key)
    plain = ChaCha20Poly1305(k).decrypt(bytes(12), sealed[32:], b"leak.answers v1 answer")
    a = v["answer"]
    text = a["text"].encode()
    expected = bytes([{"Web": 0, "Email": 1}[a["via"]]]) + varint(a["received_minute"])
    expected += varint(len(text)) + text + bytes([a["dropped_attachments"]])
    assert plain == expected, "answer plaintext"
    # The reply: version, kind 6, state, Some(seq, sealed), waiting.
    r = v["reply"]
    reply = bytes([1, 6, {"Open": 0, "Ended": 1, "Unknown": 2}[r["state"]], 1]) + varint(r["seq"])
    reply += varint(len(sealed)) + sealed + varint(r["waiting"])
    assert reply.hex() == r["encoded"], "fetch reply encoding"


if __name__ == "__main__":
    main()
