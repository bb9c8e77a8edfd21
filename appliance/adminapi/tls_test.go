package adminapi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/appliance/appliancetest"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/regiontls"
)

// startTLSRegion is startRegion with the admin APIs on HTTPS, node 0
// keeping the CA key.
func startTLSRegion(t *testing.T) *appliancetest.Region {
	t.Helper()
	app := raftmeta.App{ID: testApp, Secrets: []raftmeta.Secret{{KeyID: "k1", Secret: testSecret}},
		APIKeys: []raftmeta.APIKey{{ID: "key-1", Hash: raftmeta.HashKey(testAPIKey)}}}
	return appliancetest.StartRegion(t, 3, appliancetest.RegionOptions{TLS: true, Commands: []raftmeta.Command{raftmeta.CreateApp(app)}})
}

// tlsClient calls n's admin API over HTTPS with tok, as pushctl does.
func tlsClient(t *testing.T, n *appliancetest.Node, tok string) *api.Client {
	t.Helper()
	c, err := api.NewClient(n.AdminURL, tok, n.Client)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// csr is a certificate request for cn and 127.0.0.1 with a new key.
func csr(t *testing.T, cn string) string {
	t.Helper()
	key, err := regiontls.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := regiontls.NewCSR(key, cn, regiontls.ParseNames([]string{"127.0.0.1"}))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTLS_WritesAndStatusTravelBetweenNodesOverMutualTLS: a write sent to
// a follower reaches the leader over HTTPS with the follower's node
// certificate, and status, gathered from every node the same way, shows
// each node's certificate and that node 0 keeps the CA key.
func TestTLS_WritesAndStatusTravelBetweenNodesOverMutualTLS(t *testing.T) {
	r := startTLSRegion(t)
	if !strings.HasPrefix(r.Nodes[0].AdminURL, "https://") {
		t.Fatalf("admin URL %s", r.Nodes[0].AdminURL)
	}
	f := follower(t, r)
	cl := tlsClient(t, r.Nodes[f], r.Admin)
	ctx := context.Background()
	if _, err := cl.CreateApp(ctx, "forwarded", api.AppLimits{}); err != nil {
		t.Fatalf("a write through follower %d: %v", f, err)
	}
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range st.Nodes {
		if !n.Alive || n.Certificate == nil {
			t.Fatalf("node %s in status: %+v", n.ID, n)
		}
		if want := n.ID == r.Raft.Member(0).ID; n.Certificate.CAKey != want {
			t.Errorf("node %d (%s) ca_key %v", i, n.ID, n.Certificate.CAKey)
		}
	}

	// Plain HTTP to the HTTPS listener does nothing.
	plain := strings.Replace(r.Nodes[f].AdminURL, "https://", "http://", 1)
	pc, err := api.NewClient(plain, r.Admin, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ae *api.APIError
	if _, err := pc.CreateApp(ctx, "plain", api.AppLimits{}); !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
		t.Fatalf("a write over plain HTTP: %v", err)
	}
	apps, err := cl.Apps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range apps {
		if a.ID == "plain" {
			t.Fatal("the write over plain HTTP was applied")
		}
	}
}

// TestTLS_ForwardingHeadersComeFromNodesOnly: a request that says it was
// forwarded is refused unless it comes with a node certificate.
func TestTLS_ForwardingHeadersComeFromNodesOnly(t *testing.T) {
	r := startTLSRegion(t)
	n := r.Nodes[r.LeaderIndex(t)]
	send := func(hc *http.Client) int {
		req, _ := http.NewRequest(http.MethodPost, n.AdminURL+"/v1/admin/degrade/off", strings.NewReader(`{"reason":"x"}`))
		req.Header.Set("Authorization", "Bearer "+r.Admin)
		req.Header.Set("X-Pushd-Forwarded-By", "somebody")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := send(n.Client); code != http.StatusForbidden {
		t.Fatalf("forwarded without a node certificate: HTTP %d", code)
	}
	asNode := &http.Client{Timeout: 10 * time.Second, Transport: r.Raft.TLS(1).Transport()}
	if code := send(asNode); code != http.StatusOK {
		t.Fatalf("forwarded with a node certificate: HTTP %d", code)
	}
}

// TestTLS_SignFindsTheNodeWithTheCAKey: a sign request to a node without
// the CA key is signed by the one that keeps it; what is signed is what
// was asked for; a bad request is refused; with no node keeping the key
// the answer says so.
func TestTLS_SignFindsTheNodeWithTheCAKey(t *testing.T) {
	r := startTLSRegion(t)
	cl := tlsClient(t, r.Nodes[2], r.Admin)
	ctx := context.Background()
	signed, err := cl.Sign(ctx, &api.SignRequest{CSR: csr(t, "node7"), Kind: "node", Days: 30})
	if err != nil {
		t.Fatal(err)
	}
	if signed.IssuedBy != r.Raft.Member(0).ID || !strings.Contains(signed.CA, "BEGIN CERTIFICATE") {
		t.Fatalf("signed by %s", signed.IssuedBy)
	}
	if d := time.Until(signed.NotAfter); d < 29*24*time.Hour || d > 30*24*time.Hour {
		t.Fatalf("30 days asked, %s given", d)
	}
	svc, err := cl.Sign(ctx, &api.SignRequest{CSR: csr(t, "redis"), Kind: "service"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(svc.Certificate))
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, isNode := regiontls.NodeID(cert); isNode || cert.IsCA || cert.Subject.CommonName != "redis" {
		t.Fatalf("a service certificate: node %v, CA %v, %s", isNode, cert.IsCA, cert.Subject)
	}

	viewer := tlsClient(t, r.Nodes[2], r.Viewer)
	var ae *api.APIError
	for name, c := range map[string]struct {
		cl   *api.Client
		req  api.SignRequest
		code int
	}{
		"a viewer":        {viewer, api.SignRequest{CSR: csr(t, "n"), Kind: "node"}, http.StatusForbidden},
		"no request":      {cl, api.SignRequest{Kind: "node"}, http.StatusBadRequest},
		"a bad node id":   {cl, api.SignRequest{CSR: csr(t, "no spaces"), Kind: "node"}, http.StatusBadRequest},
		"an unknown kind": {cl, api.SignRequest{CSR: csr(t, "n"), Kind: "client"}, http.StatusBadRequest},
	} {
		if _, err := c.cl.Sign(ctx, &c.req); !errors.As(err, &ae) || ae.Status != c.code {
			t.Errorf("%s: %v, want HTTP %d", name, err, c.code)
		}
	}

	// Without the CA key anywhere.
	first := r.Raft.TLS(0)
	if err := os.Remove(filepath.Join(first.Dir(), regiontls.CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if err := first.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Sign(ctx, &api.SignRequest{CSR: csr(t, "n"), Kind: "node"}); !errors.As(err, &ae) || ae.Code != "no_ca_key" {
		t.Fatalf("sign with no CA key in the region: %v", err)
	}
}

// TestTLS_RotateRunsOnTheNodeItNames: rotate-certificate sent to one node
// for another is carried out by that node, which serves its new
// certificate from the next connection on.
func TestTLS_RotateRunsOnTheNodeItNames(t *testing.T) {
	r := startTLSRegion(t)
	target := r.Raft.TLS(1)
	old := regiontls.Serial(target.Certificate())
	res, err := tlsClient(t, r.Nodes[2], r.Admin).RotateCertificate(context.Background(), r.Raft.Member(1).ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Node != r.Raft.Member(1).ID || res.PreviousSerial != old || res.Serial == old || regiontls.Serial(target.Certificate()) != res.Serial {
		t.Fatalf("rotated %+v; old %s, now %s", res, old, regiontls.Serial(target.Certificate()))
	}
	host := strings.TrimPrefix(r.Nodes[1].AdminURL, "https://")
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", host, &tls.Config{RootCAs: target.Roots(), ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := regiontls.Serial(conn.ConnectionState().PeerCertificates[0]); got != res.Serial {
		t.Fatalf("the admin API serves %s after the rotation to %s", got, res.Serial)
	}
	var ae *api.APIError
	if _, err := tlsClient(t, r.Nodes[0], r.Admin).RotateCertificate(context.Background(), "nobody", 0); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("rotate an unknown node: %v", err)
	}
}

// TestTLS_OffInARegionWithoutTLS: the certificate endpoints of a region
// that runs without TLS say so.
func TestTLS_OffInARegionWithoutTLS(t *testing.T) {
	r := startRegion(t)
	var ae *api.APIError
	if _, err := adminClient(t, r.Nodes[0], r.Admin).Sign(context.Background(), &api.SignRequest{CSR: csr(t, "n"), Kind: "node"}); !errors.As(err, &ae) || ae.Code != "tls_off" {
		t.Fatalf("sign without TLS: %v", err)
	}
}
