package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/regiontls"
)

// The region's own TLS: Raft and the admin API run mutual TLS with
// certificates of the region's CA (package regiontls), kept in
// <data-dir>/tls. A node gets its certificate on its first start:
//
//   - the first node of a region (--bootstrap, and --dev-tls) makes the
//     CA, or takes the operator's (--region-ca, --region-ca-key), and
//     issues its own certificate; the CA key stays in its data dir;
//   - a node that joins makes its key, and has its certificate signed by
//     the member it joins through (--join), with the join token; it
//     checks that member against the region CA the operator gave it
//     (--region-ca), so the token goes to no one else;
//   - otherwise an operator placed a certificate there (pushctl tls
//     issue).
//
// Later starts load what is there. SIGHUP reloads it, and pushctl tls
// rotate replaces a node's key and certificate while it runs.

const (
	// expiryWarning is how long before its certificate expires a node
	// starts warning at every start.
	expiryWarning = 30 * 24 * time.Hour
	// joinSignTimeout bounds one attempt at getting a certificate from
	// the member --join names.
	joinSignTimeout = 15 * time.Second
)

// tlsDir is where the node keeps its region TLS material.
func (o *options) tlsDir() string { return filepath.Join(o.DataDir, "tls") }

// certNames are the names this node's certificate must carry: the hosts
// its Raft and admin API are reached at, localhost (pushctl on the host
// itself) and --tls-name.
func (o *options) certNames() regiontls.Names {
	hosts := []string{"localhost", "127.0.0.1", "::1"}
	for _, a := range []string{o.RaftAdvertise, o.RaftAddr, o.AdvertiseAdmin, o.AdminAddr} {
		host, _, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			continue
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			continue
		}
		hosts = append(hosts, host)
	}
	return regiontls.ParseNames(append(hosts, o.TLSNames...))
}

// setupRegionTLS loads this node's region TLS material, getting it first
// on the node's first start (see the top of this file).
func setupRegionTLS(ctx context.Context, o *options, log *slog.Logger) (*regiontls.Node, error) {
	dir, names := o.tlsDir(), o.certNames()
	_, err := os.Stat(filepath.Join(dir, regiontls.NodeFile))
	switch {
	case err == nil:
		if o.RegionCA != "" {
			log.Info("--region-ca is for a node's first start; this node keeps its own trust bundle", "file", filepath.Join(dir, regiontls.BundleFile))
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("region TLS: %w", err)
	case o.Bootstrap || o.Dev:
		ca, err := regionCA(o, log)
		if err != nil {
			return nil, err
		}
		if err := ca.IssueNode(dir, o.NodeID, names, 0); err != nil {
			return nil, fmt.Errorf("region TLS: issue this node's certificate: %w", err)
		}
	case o.Join != "":
		if err := joinCertificate(ctx, o, names, log); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("region TLS: no node certificate in %s: start this node once with --join (a member's admin address), "+
			"--join-token-file and --region-ca to get one, or with --bootstrap as the region's first node, "+
			"or place one from `pushctl tls issue --node %s` there (docs/operations.md, Security)", dir, o.NodeID)
	}
	n, err := regiontls.Load(dir, o.NodeID)
	if err != nil {
		return nil, fmt.Errorf("region TLS: %w", err)
	}
	if n, err = renameIfNeeded(n, names, log); err != nil {
		return nil, err
	}
	cert := n.Certificate()
	log.Info("region TLS: Raft and the admin API run mutual TLS", "serial", regiontls.Serial(cert), "not_after", cert.NotAfter.UTC(),
		"names", n.Names().Strings(), "ca_key", n.CA() != nil, "dir", dir)
	if left := time.Until(cert.NotAfter); left < expiryWarning {
		log.Warn("this node's certificate expires soon: run pushctl tls rotate "+o.NodeID, "not_after", cert.NotAfter.UTC(), "left", left.Round(time.Hour))
	}
	return n, nil
}

// renameIfNeeded checks that the node's certificate names every address
// it is reached at now. A node that keeps the CA key issues itself a new
// one when not; another can only be told how to get one.
func renameIfNeeded(n *regiontls.Node, names regiontls.Names, log *slog.Logger) (*regiontls.Node, error) {
	if n.Names().Covers(names) {
		return n, nil
	}
	ca := n.CA()
	if ca == nil {
		log.Warn("this node's certificate does not name every address it is reached at; nodes and pushctl reaching it there fail the handshake: run pushctl tls rotate "+n.ID(),
			"certificate_names", n.Names().Strings(), "addresses", names.Strings())
		return n, nil
	}
	if err := ca.IssueNode(n.Dir(), n.ID(), names, 0); err != nil {
		return nil, fmt.Errorf("region TLS: reissue this node's certificate for its addresses: %w", err)
	}
	log.Warn("this node's addresses changed: it issued itself a certificate naming them", "names", names.Strings())
	if err := n.Reload(); err != nil {
		return nil, fmt.Errorf("region TLS: %w", err)
	}
	return n, nil
}

// regionCA is the CA the region's first node issues with: the one in its
// data dir, else the operator's (--region-ca-key), else a new one.
func regionCA(o *options, log *slog.Logger) (*regiontls.CA, error) {
	dir := o.tlsDir()
	keyPath := filepath.Join(dir, regiontls.CAKeyFile)
	if keyPEM, err := os.ReadFile(keyPath); err == nil {
		certPEM, err := os.ReadFile(filepath.Join(dir, regiontls.BundleFile))
		if err != nil {
			return nil, fmt.Errorf("region TLS: %w", err)
		}
		ca, err := regiontls.ParseCA(certPEM, keyPEM, time.Now())
		if err != nil {
			return nil, fmt.Errorf("region TLS: %s: %w", keyPath, err)
		}
		return ca, nil
	}
	if o.RegionCAKey != "" {
		certPEM, err := os.ReadFile(o.RegionCA)
		if err != nil {
			return nil, fmt.Errorf("--region-ca: %w", err)
		}
		if _, err := readSecretFile(o.RegionCAKey, "--region-ca-key"); err != nil {
			return nil, err
		}
		keyPEM, err := os.ReadFile(o.RegionCAKey)
		if err != nil {
			return nil, fmt.Errorf("--region-ca-key: %w", err)
		}
		ca, err := regiontls.ParseCA(certPEM, keyPEM, time.Now())
		if err != nil {
			return nil, fmt.Errorf("--region-ca/--region-ca-key: %w", err)
		}
		if err := ca.Save(dir); err != nil {
			return nil, fmt.Errorf("region TLS: %w", err)
		}
		log.Warn("the region's CA is the one given; its key is now also kept here", "ca", ca.Cert.Subject.CommonName, "key", keyPath)
		return ca, nil
	}
	if o.RegionCA != "" {
		return nil, fmt.Errorf("--region-ca with --bootstrap needs --region-ca-key (to issue this node's certificate), or a node certificate in %s", dir)
	}
	name := "pushd region CA (" + o.NodeID + ", " + time.Now().UTC().Format("2006-01-02") + ")"
	if o.Dev {
		name = "pushd dev region CA"
	}
	ca, err := regiontls.NewCA(name, 0)
	if err != nil {
		return nil, err
	}
	if err := ca.Save(dir); err != nil {
		return nil, fmt.Errorf("region TLS: %w", err)
	}
	log.Warn("made the region's CA; keep a copy of its key somewhere safe, it is never replicated", "ca", name, "key", keyPath,
		"certificate", filepath.Join(dir, regiontls.BundleFile), "not_after", ca.Cert.NotAfter.UTC())
	return ca, nil
}

// joinCertificate gets a joining node its first certificate: a new key,
// and a certificate for it signed through the member --join names, which
// must present a certificate of the region CA given in --region-ca.
// Nothing is written until a good certificate is back.
func joinCertificate(ctx context.Context, o *options, names regiontls.Names, log *slog.Logger) error {
	dir := o.tlsDir()
	bundle, err := os.ReadFile(filepath.Join(dir, regiontls.BundleFile))
	if errors.Is(err, fs.ErrNotExist) {
		if o.RegionCA == "" {
			return fmt.Errorf("--join into a region that runs TLS needs --region-ca: a copy of any member's <data-dir>/tls/%s, "+
				"to make sure the join token goes to the region and to no one else", regiontls.BundleFile)
		}
		bundle, err = os.ReadFile(o.RegionCA)
	}
	if err != nil {
		return fmt.Errorf("--region-ca: %w", err)
	}
	_, roots, err := regiontls.ParseBundle(bundle)
	if err != nil {
		return fmt.Errorf("--region-ca %s: %w", o.RegionCA, err)
	}
	tok, err := o.joinToken()
	if err != nil {
		return err
	}
	key, err := regiontls.NewKey()
	if err != nil {
		return err
	}
	csr, err := regiontls.NewCSR(key, o.NodeID, names)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: joinSignTimeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
	defer hc.CloseIdleConnections()
	body, _ := json.Marshal(api.SignRequest{CSR: string(csr), Kind: string(regiontls.KindNode)})
	var signed api.Signed
	err = retryJoin(ctx, o, log, "get this node's certificate", func(ctx context.Context) error {
		return postAdmin(ctx, hc, "https://"+o.Join+"/v1/admin/tls/sign", tok, body, &signed)
	})
	if err != nil {
		return err
	}
	keyPEM, err := regiontls.EncodeKey(key)
	if err != nil {
		return err
	}
	if _, err := regiontls.Init(dir, o.NodeID, []byte(signed.CA), append(keyPEM, signed.Certificate...)); err != nil {
		return fmt.Errorf("the certificate %s signed: %w", o.Join, err)
	}
	log.Info("got this node's certificate from the region", "via", o.Join, "issued_by", signed.IssuedBy, "serial", signed.Serial, "not_after", signed.NotAfter)
	return nil
}

// retryJoin runs call until it succeeds, fails for good (permanentError,
// or a certificate that does not check out), or ctx ends: the member
// joined through may be starting too.
func retryJoin(ctx context.Context, o *options, log *slog.Logger, what string, call func(context.Context) error) error {
	backoff := 250 * time.Millisecond
	for {
		err := call(ctx)
		if err == nil {
			return nil
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return fmt.Errorf("%s: %w", what, err)
		}
		var verify *tls.CertificateVerificationError
		if errors.As(err, &verify) {
			return fmt.Errorf("%s: %s does not present a certificate of the region CA this node trusts (--region-ca, or <data-dir>/tls/%s): %w",
				what, o.Join, regiontls.BundleFile, err)
		}
		var rh tls.RecordHeaderError
		if errors.As(err, &rh) {
			return fmt.Errorf("%s: %s does not speak TLS (a region without TLS? then this node needs --insecure-plaintext too): %w", what, o.Join, err)
		}
		log.Warn(what+": retrying", "via", o.Join, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// postAdmin posts body to an admin API URL with a bearer token and
// decodes a 200 answer into out (nil: discarded). A refusal a retry
// cannot fix is a permanentError.
func postAdmin(ctx context.Context, hc *http.Client, url, tok string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, joinSignTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return permanentError{err}
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusOK:
		if out == nil {
			return nil
		}
		return json.Unmarshal(msg, out)
	case resp.StatusCode >= 500:
		return fmt.Errorf("%s answered %s: %s", req.URL.Host, resp.Status, bytes.TrimSpace(msg))
	}
	return permanentError{fmt.Errorf("%s refused: %s: %s", req.URL.Host, resp.Status, bytes.TrimSpace(msg))}
}

// keyPair is a certificate and key from files, served through
// GetCertificate so that a SIGHUP can replace them without a restart.
type keyPair struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func loadKeyPair(certFile, keyFile string) (*keyPair, error) {
	k := &keyPair{certFile: certFile, keyFile: keyFile}
	return k, k.reload()
}

func (k *keyPair) reload() error {
	c, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("%s and %s: %w", k.certFile, k.keyFile, err)
	}
	if time.Now().After(c.Leaf.NotAfter) {
		return fmt.Errorf("%s expired on %s", k.certFile, c.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	k.cur.Store(&c)
	return nil
}

func (k *keyPair) serverConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return k.cur.Load(), nil
	}}
}

// nodeServerConfig serves with the node's region certificate and asks for
// no client certificate: the push API of a --dev-tls region.
func nodeServerConfig(n *regiontls.Node) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return n.ClientCertificate(nil)
	}}
}

// watchReload reloads the region's certificates and the push API's on
// SIGHUP, until ctx ends; a reload that fails keeps what was in use. The
// caller waits for the returned channel to close.
func watchReload(ctx context.Context, hup <-chan os.Signal, rt *regiontls.Node, push *keyPair, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
			}
			if rt != nil {
				if err := rt.Reload(); err != nil {
					log.Error("SIGHUP: region certificates not reloaded; the ones in use stay", "err", err)
				} else {
					log.Info("SIGHUP: region certificates reloaded", "serial", regiontls.Serial(rt.Certificate()), "not_after", rt.Certificate().NotAfter.UTC())
				}
			}
			if push != nil {
				if err := push.reload(); err != nil {
					log.Error("SIGHUP: push API certificate not reloaded; the one in use stays", "err", err)
				} else {
					log.Info("SIGHUP: push API certificate reloaded", "not_after", push.cur.Load().Leaf.NotAfter.UTC())
				}
			}
		}
	}()
	return done
}

// registerCertMetrics exports when the node's certificates expire, for
// an alert well before they do.
func registerCertMetrics(reg prometheus.Registerer, rt *regiontls.Node, push *keyPair) {
	expiry := func(c *x509.Certificate) float64 { return float64(c.NotAfter.Unix()) }
	if rt != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushd_tls_node_certificate_expiry_timestamp_seconds",
			Help: "When this node's region certificate (Raft, admin API) expires, Unix seconds.",
		}, func() float64 { return expiry(rt.Certificate()) }))
	}
	if push != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "pushd_tls_push_certificate_expiry_timestamp_seconds",
			Help: "When the push API's certificate expires, Unix seconds.",
		}, func() float64 { return expiry(push.cur.Load().Leaf) }))
	}
}
