package config

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yamlEntry is one key (or sequence item) of a YAML document: where it
// sits and the dotted path it has in the config.
type yamlEntry struct {
	path           string
	key, scalar    string
	keyLine, vLine int
}

// yamlEntries lists every entry of the document under n, in order.
func yamlEntries(n *yaml.Node, prefix string, out []yamlEntry) []yamlEntry {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			out = yamlEntries(c, prefix, out)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			out = append(out, yamlEntry{path: path, key: k.Value, scalar: v.Value, keyLine: k.Line, vLine: v.Line})
			out = yamlEntries(v, path, out)
		}
	case yaml.SequenceNode:
		for i, v := range n.Content {
			path := prefix + "[" + strconv.Itoa(i) + "]"
			out = append(out, yamlEntry{path: path, scalar: v.Value, keyLine: v.Line, vLine: v.Line})
			out = yamlEntries(v, path, out)
		}
	}
	return out
}

var (
	unknownField = regexp.MustCompile("^line ([0-9]+): field (.+) not found in type (.+)$")
	badValue     = regexp.MustCompile("^line ([0-9]+): cannot unmarshal (!![a-z]+)(?: `(.*)`)? into (.+)$")
)

// yamlFieldErrors turns a decoder's type errors (which name only a line)
// into field errors that name the setting by its dotted path, as every
// other configuration error does. A message it cannot place keeps its line.
func yamlFieldErrors(data []byte, te *yaml.TypeError) Errors {
	var doc yaml.Node
	var entries []yamlEntry
	if yaml.Unmarshal(data, &doc) == nil {
		entries = yamlEntries(&doc, "", nil)
	}
	// find is the innermost entry on line that match picks, or else the
	// first value on it (exact is false then).
	find := func(line int, match func(e yamlEntry) bool) (path string, exact bool) {
		for i := len(entries) - 1; i >= 0; i-- {
			if e := entries[i]; (e.keyLine == line || e.vLine == line) && match(e) {
				return e.path, true
			}
		}
		for _, e := range entries {
			if e.vLine == line {
				return e.path, false
			}
		}
		return "", false
	}
	var errs Errors
	for _, msg := range te.Errors {
		if m := unknownField.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			if path, exact := find(line, func(e yamlEntry) bool { return e.keyLine == line && e.key == m[2] }); exact {
				errs.Add(path, fmt.Sprintf("unknown field (line %d)", line))
				continue
			}
		}
		if m := badValue.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			shown := strings.TrimSuffix(m[3], "...")
			path, _ := find(line, func(e yamlEntry) bool {
				if m[3] == "" { // a sequence or mapping where a scalar belongs
					return e.vLine == line && e.scalar == ""
				}
				return e.vLine == line && strings.HasPrefix(e.scalar, shown)
			})
			if path != "" {
				what := m[2]
				if m[3] != "" {
					what = "`" + m[3] + "` (" + m[2] + ")"
				}
				errs.Add(path, fmt.Sprintf("cannot read %s as %s (line %d)", what, m[4], line))
				continue
			}
		}
		errs.Add("(file)", msg)
	}
	return errs
}

// asTypeError is the decoder's collected type errors, if err is one.
func asTypeError(err error) (*yaml.TypeError, bool) {
	var te *yaml.TypeError
	return te, errors.As(err, &te)
}
