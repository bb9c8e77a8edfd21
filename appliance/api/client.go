package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxResponseBytes bounds an API answer read into memory.
const maxResponseBytes = 8 << 20

// Client calls one of pushd's HTTP APIs: a base URL and a bearer token
// (the push API with an app's API key; the admin API with an admin token).
// Each API's endpoints are methods in their own file (push.go, admin.go);
// they all go through Do, so every failure is an *APIError with the
// server's stable code, or a transport error naming the request. A Client
// is safe for concurrent use once built; OnRetry must be called before
// the first request.
type Client struct {
	base  *url.URL
	token string
	hc    *http.Client
	// onRetry, when set, hears about each admin request about to be sent
	// again (admin.go), so a command can say why it is waiting.
	onRetry func(Retry)
}

// NewClient returns a client for the API at baseURL (scheme and host, and
// optionally a path prefix). A nil hc means a client with a 30 s timeout.
func NewClient(baseURL, token string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("api url %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("api url %q: want http(s)://host:port", baseURL)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &Client{base: u, token: token, hc: hc}, nil
}

// OnRetry has f hear about each admin request about to be sent again,
// before the pause, so a caller can say why it is waiting.
func (c *Client) OnRetry(f func(Retry)) { c.onRetry = f }

// APIError is an error answer from the API: `{"error":{"code","message"}}`.
// Code is stable and safe to compare; Message is for people.
type APIError struct {
	Method, Path string
	Status       int
	Code         string
	Message      string
	// RetryAfter is the Retry-After header of 429 and 503 answers; zero
	// when absent.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s %s: HTTP %d %s", e.Method, e.Path, e.Status, e.Code)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return msg
}

// Do sends a request with in as its JSON body (nil: no body) and decodes a
// 2xx answer into out (nil: discarded). path is already escaped (build it
// with url.PathEscape for ids), so an id holding "/" stays one segment.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	return c.do(ctx, method, path, query, nil, in, out)
}

// do is Do with extra request headers (the admin API's X-Request-ID).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, header http.Header, in, out any) error {
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	u.Path = p
	u.RawQuery = query.Encode()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeAPIError(method, path, resp, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func decodeAPIError(method, path string, resp *http.Response, body []byte) error {
	e := &APIError{Method: method, Path: path, Status: resp.StatusCode}
	var wrapped struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &wrapped) == nil && wrapped.Error.Code != "" {
		e.Code, e.Message = wrapped.Error.Code, wrapped.Error.Message
	} else {
		// Not our API's error shape (a proxy, a wrong port): keep what
		// the body says, shortened.
		e.Code = "http_" + strconv.Itoa(resp.StatusCode)
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "…"
		}
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if secs, err := strconv.Atoi(s); err == nil && secs >= 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		} else if t, err := http.ParseTime(s); err == nil {
			e.RetryAfter = max(0, time.Until(t).Round(time.Second))
		}
	}
	return e
}
