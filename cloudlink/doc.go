// Package cloudlink is the box's one outbound connection to its fleet: MQTT v5
// over TLS with msgpack payloads and a durable store-and-forward outbox.
// Built by the cloud-link issue; see docs/protocol.md once it lands.
package cloudlink
