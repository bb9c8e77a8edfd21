// Package regiontls is a region's own public key infrastructure: the
// region CA, the certificates it issues to nodes and to services such as
// Redis, and the TLS configurations of mutual TLS between nodes.
//
// A node keeps its material in one directory (pushd uses <data-dir>/tls):
//
//	ca.crt    the region's trust bundle: one CA certificate, two while
//	          the CA is being replaced
//	node.pem  the node's key and certificate, one file so that a rotation
//	          replaces both at once (mode 0600)
//	ca.key    the CA key, on the nodes that issue certificates only
//	          (mode 0600); it is never sent anywhere
//
// The first node of a region makes the CA and issues itself a certificate:
//
//	ca, _ := regiontls.NewCA("pushd region bj", regiontls.DefaultCAValidity)
//	_ = ca.Save(dir)
//	_ = ca.IssueNode(dir, "bj-1", regiontls.ParseNames([]string{"10.0.0.1"}), 0)
//	n, _ := regiontls.Load(dir, "bj-1")
//
// Other nodes make a key and a certificate request (NewKey, NewCSR), have
// a node holding the CA key sign it (CA.Issue), and keep the result
// (Node.Install, or WriteNode before the first Load).
//
// A node certificate names its node with the URI SAN urn:pushd:node:<id>
// and the hosts it is reached at as DNS and IP SANs. Between nodes both
// sides must present a node certificate that chains to the bundle, and the
// dialing side checks that the certificate names the host it dialed; a
// service certificate from the same CA, or any certificate from another
// CA, is refused during the handshake.
//
// A Node is safe for concurrent use: its configurations read the current
// material at each handshake, so Reload and Install take effect for new
// connections without a restart, and connections already open keep
// theirs.
package regiontls
