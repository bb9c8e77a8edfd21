package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/pushd/pushd/appliance/api"
	"github.com/pushd/pushd/raftmeta"
	"github.com/pushd/pushd/regiontls"
)

// The region's certificates through the admin API.
//
// Signing needs the region CA's key, which only some nodes keep (the
// first node of the region makes it; an operator may copy it to others)
// and which never travels: a node without it sends a sign request on to
// the other members in turn until one that has it answers. Rotating a
// node's certificate runs on that node, which makes its new key itself and
// has the request signed the same way, with the caller's admin token.
//
// None of this is a Raft write: nothing about a certificate is
// replicated, so a retried request signs again, which is harmless.

// TLS is the region's TLS as the admin API of one node uses it.
type TLS struct {
	// Node is this node's material: it signs when it keeps the CA key,
	// and rotate-certificate replaces its key and certificate.
	Node *regiontls.Node
	// Names are the host names and addresses a rotated certificate
	// carries: the node's current addresses. Zero: those of the
	// certificate in use.
	Names regiontls.Names
}

// maxSignHops bounds a sign request's travel: the node asked, then one
// member holding the CA key.
const maxSignHops = 1

// isNode reports whether the request came with a node certificate of the
// region, and from which node.
func isNode(r *http.Request) (string, bool) { return regiontls.PeerNode(r.TLS) }

// requireNodeForForwarded refuses a request that says it was forwarded
// when it did not come from a node: the forwarding headers steer how a
// node treats a write (hops, deadline), and only the region's nodes may
// set them. Without TLS there is nothing to check them with.
func (srv *server) requireNodeForForwarded(r *http.Request) *api.APIError {
	if srv.tls == nil || r.Header.Get(forwardedHeader) == "" {
		return nil
	}
	if _, ok := isNode(r); ok {
		return nil
	}
	return &api.APIError{Status: http.StatusForbidden, Code: "forbidden",
		Message: forwardedHeader + " is for the region's nodes: a forwarded request must come with a node certificate"}
}

// certificateInfo describes this node's certificate; nil without TLS.
func (srv *server) certificateInfo() *api.CertificateInfo {
	if srv.tls == nil {
		return nil
	}
	c := srv.tls.Node.Certificate()
	return &api.CertificateInfo{Serial: regiontls.Serial(c), NotAfter: c.NotAfter.UTC(),
		Names: srv.tls.Node.Names().Strings(), CAKey: srv.tls.Node.CA() != nil}
}

func tlsOff() *api.APIError {
	return &api.APIError{Status: http.StatusConflict, Code: "tls_off",
		Message: "this region runs without TLS (pushd --dev or --insecure-plaintext): it has no CA and no node certificates"}
}

// adminSign signs a certificate request here, or has a member that keeps
// the CA key sign it.
func (srv *server) adminSign(ctx context.Context, c *adminCall) (any, error) {
	if srv.tls == nil {
		return nil, tlsOff()
	}
	var req api.SignRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	if req.CSR == "" || !regiontls.Kind(req.Kind).Valid() || req.Days < 0 {
		return nil, api.BadRequest("invalid", "csr (PEM), kind (node or service) and days (0 or more) are required")
	}
	return srv.sign(ctx, &req, c.r.Header.Get("Authorization"), c.hops(), c.actor)
}

// sign signs req with this node's CA key, or else asks the other members
// in turn (when the request has not travelled already), with auth, the
// caller's admin token.
func (srv *server) sign(ctx context.Context, req *api.SignRequest, auth string, hops int, actor string) (*api.Signed, error) {
	if ca := srv.tls.Node.CA(); ca != nil {
		certPEM, cert, err := ca.Issue([]byte(req.CSR), regiontls.Kind(req.Kind), time.Duration(req.Days)*24*time.Hour)
		if err != nil {
			return nil, api.BadRequest("invalid", "%v", err)
		}
		srv.log.Info("issued a certificate", "kind", req.Kind, "name", cert.Subject.CommonName, "serial", regiontls.Serial(cert),
			"names", strings.Join(regiontls.Names{DNS: cert.DNSNames, IPs: cert.IPAddresses}.Strings(), ","), "not_after", cert.NotAfter.UTC(), "by", actor)
		return &api.Signed{Certificate: string(certPEM), CA: string(srv.tls.Node.Bundle()), Serial: regiontls.Serial(cert),
			NotAfter: cert.NotAfter.UTC(), IssuedBy: srv.id}, nil
	}
	if hops >= maxSignHops {
		return nil, noCAKey("this node (" + srv.id + ") does not keep the region CA's key")
	}
	members := srv.meta.State().Members
	ids := make([]string, 0, len(members))
	for id := range members {
		if id != srv.id {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	var tried []string
	for _, id := range ids {
		var out api.Signed
		ae, err := srv.callMember(ctx, members[id], http.MethodPost, "/v1/admin/tls/sign", auth, req, &out)
		switch {
		case err != nil:
			tried = append(tried, id+" (unreachable: "+err.Error()+")")
		case ae != nil && ae.Code == "no_ca_key":
			tried = append(tried, id)
		case ae != nil:
			return nil, ae
		default:
			return &out, nil
		}
	}
	return nil, noCAKey(fmt.Sprintf("no member keeps the region CA's key, or none that does answered (asked %s and %s); "+
		"the key is <data-dir>/tls/ca.key on the node that formed the region", srv.id, strings.Join(append(tried, "no other"), ", ")))
}

func noCAKey(msg string) *api.APIError {
	return &api.APIError{Status: http.StatusConflict, Code: "no_ca_key", Message: msg}
}

// adminRotate gives node {id} a new key and certificate: here when {id}
// is this node, else on that node (one hop).
func (srv *server) adminRotate(ctx context.Context, c *adminCall) (any, error) {
	if srv.tls == nil {
		return nil, tlsOff()
	}
	var b struct {
		Days int `json:"days"`
	}
	if err := c.decode(&b); err != nil {
		return nil, err
	}
	if b.Days < 0 {
		return nil, api.BadRequest("invalid", "days must be 0 (a year) or more")
	}
	id := c.r.PathValue("id")
	if id != srv.id {
		m, ok := srv.meta.State().Members[id]
		if !ok {
			return nil, fmt.Errorf("node %s: %w", id, raftmeta.ErrNotFound)
		}
		if c.hops() > 0 {
			return nil, api.Errorf(http.StatusConflict, "conflict", "forwarded to %s for node %s: the member records disagree; retry", srv.id, id)
		}
		var out api.CertificateRotated
		ae, err := srv.callMember(ctx, m, http.MethodPost, c.r.URL.RequestURI(), c.r.Header.Get("Authorization"), b, &out)
		switch {
		case err != nil:
			return nil, api.Unavailable("node %s did not answer: %v", id, err)
		case ae != nil:
			return nil, ae
		}
		return &out, nil
	}
	return srv.rotate(ctx, b.Days, c.r.Header.Get("Authorization"), c.actor)
}

// rotate makes this node a new key, has its certificate signed for the
// node's names, and installs both: new connections use them at once,
// open ones keep the old certificate until they close.
func (srv *server) rotate(ctx context.Context, days int, auth, actor string) (*api.CertificateRotated, error) {
	node := srv.tls.Node
	prev := node.Certificate()
	names := srv.tls.Names
	if names.Empty() {
		names = node.Names()
	}
	key, err := regiontls.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := regiontls.NewCSR(key, srv.id, names)
	if err != nil {
		return nil, err
	}
	signed, err := srv.sign(ctx, &api.SignRequest{CSR: string(csr), Kind: string(regiontls.KindNode), Days: days}, auth, 0, actor)
	if err != nil {
		return nil, err
	}
	keyPEM, err := regiontls.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	if err := node.Install(append(keyPEM, signed.Certificate...)); err != nil {
		return nil, fmt.Errorf("install the new certificate: %w", err)
	}
	cur := node.Certificate()
	srv.log.Warn("rotated this node's certificate", "serial", regiontls.Serial(cur), "previous_serial", regiontls.Serial(prev),
		"not_after", cur.NotAfter.UTC(), "issued_by", signed.IssuedBy, "by", actor)
	return &api.CertificateRotated{Node: srv.id, Serial: regiontls.Serial(cur), PreviousSerial: regiontls.Serial(prev),
		NotAfter: cur.NotAfter.UTC(), Names: node.Names().Strings(), IssuedBy: signed.IssuedBy}, nil
}

// callMember sends one request to a member's admin API as this node,
// marked as forwarded, and decodes a 2xx answer into out. An error answer
// comes back as the *api.APIError; err is for a call that got no answer.
func (srv *server) callMember(ctx context.Context, m raftmeta.Member, method, uri, auth string, in, out any) (*api.APIError, error) {
	if m.AdminAddr == "" {
		return nil, errors.New("no admin address recorded")
	}
	body, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	u := &url.URL{Scheme: srv.scheme, Host: m.AdminAddr}
	req, err := http.NewRequestWithContext(ctx, method, u.String()+uri, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(forwardedHeader, srv.id)
	resp, err := srv.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardAnswer))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		ae := &api.APIError{Status: resp.StatusCode, Code: fmt.Sprintf("http_%d", resp.StatusCode), Message: strings.TrimSpace(string(b))}
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			ae.Code, ae.Message = e.Error.Code, m.ID+": "+e.Error.Message
		}
		return ae, nil
	}
	return nil, json.Unmarshal(b, out)
}
