package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// What the handlers of both APIs share: the JSON answer, the error answer
// (the same *APIError a Client decodes), and reading a body.

// Errorf returns an error answer with an HTTP status and a stable code.
func Errorf(status int, code, format string, args ...any) *APIError {
	return &APIError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// BadRequest returns a 400 error answer.
func BadRequest(code, format string, args ...any) *APIError {
	return Errorf(http.StatusBadRequest, code, format, args...)
}

// Unavailable returns a 503 unavailable answer asking the caller to retry
// after a second.
func Unavailable(format string, args ...any) *APIError {
	e := Errorf(http.StatusServiceUnavailable, "unavailable", format, args...)
	e.RetryAfter = time.Second
	return e
}

// WriteJSON writes v as the answer, with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes e as {"error":{"code","message"}}, with Retry-After
// in whole seconds (rounded up) when e has one.
func WriteError(w http.ResponseWriter, e *APIError) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.RetryAfter+time.Second-1)/time.Second)))
	}
	WriteJSON(w, e.Status, map[string]any{"error": map[string]string{"code": e.Code, "message": e.Message}})
}

// ReadBody reads the whole request body, refusing one over limit bytes
// with 413 payload_too_large before anything looks at its content.
func ReadBody(r *http.Request, limit int64) ([]byte, *APIError) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, Errorf(http.StatusRequestEntityTooLarge, "payload_too_large", "body over %d bytes", limit)
	case err != nil:
		return nil, BadRequest("bad_json", "read body: %v", err)
	}
	return body, nil
}
