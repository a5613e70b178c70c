package hub

import "net/http"

// routeTable is the hub's mux, remembering every pattern registered on
// it: the OpenAPI conformance test holds the document to this list, so a
// route cannot be added without being described (or named as not JSON).
type routeTable struct {
	mux      *http.ServeMux
	patterns []string
}

func newRouteTable() *routeTable { return &routeTable{mux: http.NewServeMux()} }

// Handle registers h for pattern, as http.ServeMux.Handle does.
func (t *routeTable) Handle(pattern string, h http.Handler) {
	t.patterns = append(t.patterns, pattern)
	t.mux.Handle(pattern, h)
}

// HandleFunc registers f for pattern, as http.ServeMux.HandleFunc does.
func (t *routeTable) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	t.Handle(pattern, http.HandlerFunc(f))
}
