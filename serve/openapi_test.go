package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clipagiqa/clipagiqa/clipagiqa"
	"github.com/clipagiqa/clipagiqa/clipagiqa/imageprep"
	"github.com/clipagiqa/clipagiqa/serve/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// openAPI is the subset of an OpenAPI 3 document the drift test reads.
type openAPI struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]openAPIOp       `json:"paths"`
	Components struct{ Schemas map[string]oaSchema } `json:"components"`
}

type openAPIOp struct {
	Responses map[string]struct {
		Content map[string]struct {
			Schema oaSchema `json:"schema"`
		} `json:"content"`
	} `json:"responses"`
}

type oaSchema struct {
	Ref        string              `json:"$ref"`
	Type       string              `json:"type"`
	Enum       []string            `json:"enum"`
	Required   []string            `json:"required"`
	Properties map[string]oaSchema `json:"properties"`
	Items      *oaSchema           `json:"items"`
}

func loadOpenAPI(t *testing.T) openAPI {
	t.Helper()
	var doc openAPI
	require.NoError(t, json.Unmarshal(OpenAPI(), &doc))
	require.True(t, strings.HasPrefix(doc.OpenAPI, "3."), "an OpenAPI 3 document")
	return doc
}

// The document lists exactly the routes the mux serves, with their methods.
func TestOpenAPIPathsMatchRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	s := New(Config{Logger: quietLogger()})
	served := map[string][]string{}
	for _, rt := range s.Routes() {
		for _, m := range rt.Methods {
			served[rt.Path] = append(served[rt.Path], strings.ToLower(m))
		}
	}
	documented := map[string][]string{}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented[p] = append(documented[p], m)
		}
	}
	for _, m := range []map[string][]string{served, documented} {
		for _, v := range m {
			sort.Strings(v)
		}
	}
	assert.Equal(t, served, documented)
}

// jsonFields are the JSON names of a struct's fields and whether each is
// always present (no omitempty), with their OpenAPI types.
func jsonFields(t *testing.T, typ reflect.Type) map[string]struct {
	required bool
	kind     string
} {
	t.Helper()
	out := map[string]struct {
		required bool
		kind     string
	}{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		require.NotEmpty(t, name, "%s.%s has a json name", typ.Name(), f.Name)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		kind := map[reflect.Kind]string{reflect.String: "string", reflect.Float64: "number", reflect.Int: "integer",
			reflect.Int64: "integer", reflect.Bool: "boolean", reflect.Slice: "array"}[ft.Kind()]
		require.NotEmpty(t, kind, "%s.%s: kind %s", typ.Name(), f.Name, ft.Kind())
		out[name] = struct {
			required bool
			kind     string
		}{!strings.Contains(opts, "omitempty"), kind}
	}
	return out
}

// The schemas have the Go wire types' fields, types and required lists, and
// the ErrorCode enum is api.Codes.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	doc := loadOpenAPI(t)
	schemas := doc.Components.Schemas
	types := map[string]reflect.Type{
		"Result": reflect.TypeOf(api.Result{}), "Response": reflect.TypeOf(api.Response{}),
		"ErrorBody": reflect.TypeOf(api.ErrorBody{}), "Info": reflect.TypeOf(api.Info{}), "Status": reflect.TypeOf(api.Status{}),
	}
	for name, typ := range types {
		t.Run(name, func(t *testing.T) {
			sch, ok := schemas[name]
			require.True(t, ok, "schema %s documented", name)
			fields := jsonFields(t, typ)
			var names, required []string
			for n, f := range fields {
				names = append(names, n)
				if f.required {
					required = append(required, n)
				}
				p := sch.Properties[n]
				kind := p.Type
				if p.Ref == "#/components/schemas/ErrorCode" {
					kind = "string"
				}
				assert.Equal(t, f.kind, kind, "type of %s.%s", name, n)
			}
			var documented []string
			for n := range sch.Properties {
				documented = append(documented, n)
			}
			sort.Strings(names)
			sort.Strings(documented)
			sort.Strings(required)
			docRequired := slices.Clone(sch.Required)
			sort.Strings(docRequired)
			assert.Equal(t, names, documented, "properties")
			assert.Equal(t, required, docRequired, "required = the fields without omitempty")
		})
	}
	var codes []string
	for _, c := range api.Codes {
		codes = append(codes, string(c))
	}
	assert.ElementsMatch(t, codes, schemas["ErrorCode"].Enum)
}

// errBackend fails or scores by the body's content, to reach every status.
func errBackend() fakeBackend {
	return fakeBackend{score: func(ctx context.Context, data []byte) (float64, error) {
		switch string(data) {
		case "overloaded":
			return 0, fmt.Errorf("x: %w", clipagiqa.ErrOverloaded)
		case "internal":
			return 0, errors.New("exploded")
		case "slow":
			return 0, fmt.Errorf("x: %w", context.DeadlineExceeded)
		case "huge":
			return 0, fmt.Errorf("%w: %w", clipagiqa.ErrInvalidImage, imageprep.ErrTooManyPixels)
		case "garbage":
			return 0, fmt.Errorf("%w: no", clipagiqa.ErrInvalidImage)
		}
		return 0.5, nil
	}}
}

// Every status a handler answers is documented for its operation, every
// documented status is answered by some request, and each body has exactly
// the documented fields.
func TestOpenAPIStatusesMatchHandlers(t *testing.T) {
	doc := loadOpenAPI(t)
	_, ready := newTestServer(t, errBackend(), Config{MaxBytes: 1 << 10, MaxParts: 2})
	_, loading := newTestServer(t, nil, Config{})
	slow := New(Config{Timeout: 100 * time.Millisecond, Logger: quietLogger()})
	slow.SetBackend(errBackend())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- slow.Serve(ctx, ln) }()
	defer func() { cancel(); <-done }()

	ct3, body3 := multipartBody(t, []filePart{{"a", []byte("x")}, {"b", []byte("x")}, {"c", []byte("x")}})
	type call struct {
		op, path, method, ctype string
		body                    []byte
		base                    string
	}
	R, L := ready.URL, loading.URL
	calls := []call{
		{"score", "/v1/score?name=a", "POST", "image/png", []byte("ok"), R},
		{"score", "/v1/score", "POST", "image/png", nil, R},
		{"score", "/v1/score", "POST", "image/png", []byte("garbage"), R},
		{"score", "/v1/score", "POST", "image/png", bytes.Repeat([]byte("x"), 2<<10), R},
		{"score", "/v1/score", "POST", ct3, body3, R},
		{"score", "/v1/score", "POST", "text/plain", []byte("ok"), R},
		{"score", "/v1/score", "POST", "image/png", []byte("huge"), R},
		{"score", "/v1/score", "POST", "image/png", []byte("internal"), R},
		{"score", "/v1/score", "POST", "image/png", []byte("overloaded"), R},
		{"score", "/v1/score", "POST", "image/png", []byte("ok"), L},
		{"score", "/v1/score", "POST", "image/png", []byte("slow"), R},
		{"info", "/v1/info", "GET", "", nil, R},
		{"info", "/v1/info", "GET", "", nil, L},
		{"healthz", "/healthz", "GET", "", nil, R},
		{"readyz", "/readyz", "GET", "", nil, R},
		{"readyz", "/readyz", "GET", "", nil, L},
		{"metrics", "/metrics", "GET", "", nil, R},
		{"openapi", "/openapi.json", "GET", "", nil, R},
		{"page", "/", "GET", "", nil, R},
	}
	opOf := map[string]string{"score": "/v1/score", "info": "/v1/info", "healthz": "/healthz", "readyz": "/readyz",
		"metrics": "/metrics", "openapi": "/openapi.json", "page": "/"}
	check := func(op string, status int, ctype string, body []byte) {
		path := opOf[op]
		method := "get"
		if op == "score" {
			method = "post"
		}
		resp, ok := doc.Paths[path][method].Responses[strconv.Itoa(status)]
		if !assert.True(t, ok, "%s %s answered %d, which is not documented", method, path, status) {
			return
		}
		mt, _, _ := strings.Cut(ctype, ";")
		content, ok := resp.Content[mt]
		require.True(t, ok, "%s %d: content type %s documented", path, status, mt)
		if mt == "application/json" && content.Schema.Ref != "" {
			name := strings.TrimPrefix(content.Schema.Ref, "#/components/schemas/")
			target := map[string]any{"Response": &api.Response{}, "ErrorBody": &api.ErrorBody{}, "Info": &api.Info{}, "Status": &api.Status{}}[name]
			require.NotNil(t, target, name)
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.DisallowUnknownFields()
			require.NoError(t, dec.Decode(target), "%s %d body %s is a %s", path, status, body, name)
			if eb, ok := target.(*api.ErrorBody); ok {
				assert.Contains(t, api.Codes, eb.Code, "%s %d: code %q", path, status, eb.Code)
				assert.NotEmpty(t, eb.Error)
			}
		}
	}
	got := map[string]map[string]bool{}
	record := func(op string, status int) {
		if got[op] == nil {
			got[op] = map[string]bool{}
		}
		got[op][strconv.Itoa(status)] = true
	}
	for _, c := range calls {
		req, err := http.NewRequest(c.method, c.base+c.path, bytes.NewReader(c.body))
		require.NoError(t, err)
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		check(c.op, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		record(c.op, resp.StatusCode)
	}
	// 408: a body that stops arriving.
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = fmt.Fprintf(conn, "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100\r\n\r\nabc")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	check("score", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	record("score", resp.StatusCode)

	for op, path := range opOf {
		for method, o := range doc.Paths[path] {
			var documented []string
			for code := range o.Responses {
				documented = append(documented, code)
			}
			var answered []string
			for code := range got[op] {
				answered = append(answered, code)
			}
			assert.ElementsMatch(t, documented, answered, "%s %s: documented statuses vs those the requests got", method, path)
		}
	}
}

// Any other method on a route is 405 with Allow and a JSON error with its
// code, and unknown paths are 404 not_found.
func TestMethodNotAllowedAndNotFound(t *testing.T) {
	s, ts := newTestServer(t, errBackend(), Config{})
	for _, rt := range s.Routes() {
		m := http.MethodDelete
		req, err := http.NewRequest(m, ts.URL+rt.Path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		var eb api.ErrorBody
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
		resp.Body.Close()
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, rt.Path)
		assert.Equal(t, strings.Join(rt.Methods, ", "), resp.Header.Get("Allow"), rt.Path)
		assert.Equal(t, api.CodeMethodNotAllowed, eb.Code, rt.Path)
	}
	resp, err := http.Get(ts.URL + "/v2/score")
	require.NoError(t, err)
	var eb api.ErrorBody
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	assert.Equal(t, api.CodeNotFound, eb.Code)
}
