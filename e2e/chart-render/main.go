// chart-render renders a Helm chart the way `helm template` does, for the part of Helm
// that muster's chart (charts/muster) uses. Helm cannot be installed on the machines
// muster's CI runs on; this lets the chart be rendered and applied to a real API server
// there. On a machine with Helm, the tests use `helm template` instead, with the same
// arguments.
//
// Built in GOPATH mode with Debian's Go and packages (golang-go,
// golang-github-masterminds-sprig-dev, golang-github-xeipuuv-gojsonschema-dev,
// golang-gopkg-yaml.v2-dev, golang-gopkg-yaml.v3-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o chart-render main.go
//
// Usage (a subset of `helm template`'s):
//
//	chart-render [-n NAMESPACE] [-f VALUES]... [--kube-version V] [--api-versions G/V]...
//	             [--include-crds] [--notes] NAME CHART
//
// What it does as Helm does: Chart.yaml's kubeVersion is checked against --kube-version;
// the chart's values.yaml is merged with each -f file in order (a null removes a key);
// the result is validated against values.schema.json; every template in templates/ is
// executed with .Values, .Release, .Chart, .Capabilities and .Template, with sprig's
// functions (without env and expandenv) and Helm's toYaml, toJson, fromYaml, include,
// required; a missing value prints as nothing; files whose name starts with `_` and
// NOTES.txt are not output; documents are emitted in Helm's install order of kinds, each
// headed by `# Source: CHART/templates/FILE`, and each must be valid YAML.
// --notes prints the rendered NOTES.txt instead. Not supported: subcharts, --set, tpl,
// lookup, .Files, hooks.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/semver"
	"github.com/Masterminds/sprig"
	"github.com/xeipuuv/gojsonschema"
	yaml2 "gopkg.in/yaml.v2"
	"gopkg.in/yaml.v3"
)

type options struct {
	release     string
	chart       string
	namespace   string
	valueFiles  []string
	kubeVersion string
	apiVersions []string
	includeCRDs bool
	notes       bool
}

const usage = "usage: chart-render [-n NAMESPACE] [-f VALUES]... [--kube-version V] " +
	"[--api-versions G/V]... [--include-crds] [--notes] NAME CHART"

func parseArgs(args []string) (options, error) {
	o := options{namespace: "default", kubeVersion: "1.32.0"}
	var positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		value := func() (string, error) {
			if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "--") {
				return v, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", a)
			}
			i++
			return args[i], nil
		}
		flag, _, _ := strings.Cut(a, "=")
		var err error
		var v string
		switch flag {
		case "-n", "--namespace":
			v, err = value()
			o.namespace = v
		case "-f", "--values":
			v, err = value()
			o.valueFiles = append(o.valueFiles, v)
		case "--kube-version":
			v, err = value()
			o.kubeVersion = v
		case "--api-versions", "-a":
			v, err = value()
			o.apiVersions = append(o.apiVersions, v)
		case "--include-crds":
			o.includeCRDs = true
		case "--notes":
			o.notes = true
		case "-h", "--help":
			return o, fmt.Errorf("%s", usage)
		default:
			if strings.HasPrefix(a, "-") {
				return o, fmt.Errorf("unknown flag %s\n%s", a, usage)
			}
			positional = append(positional, a)
		}
		if err != nil {
			return o, err
		}
	}
	if len(positional) != 2 {
		return o, fmt.Errorf("%s", usage)
	}
	o.release, o.chart = positional[0], positional[1]
	return o, nil
}

func main() {
	o, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out, err := render(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

// readYAML reads a YAML file into the form Helm gives values: JSON types (maps with
// string keys, float64 numbers).
func readYAML(path string) (map[string]interface{}, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v interface{}
	if err := yaml.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if v == nil {
		return map[string]interface{}{}, nil
	}
	j, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var m map[string]interface{}
	if err := json.Unmarshal(j, &m); err != nil {
		return nil, fmt.Errorf("%s: the top level must be a mapping: %w", path, err)
	}
	return m, nil
}

// merge puts over into base: maps merge key by key, anything else replaces, null removes.
func merge(base, over map[string]interface{}) {
	for k, v := range over {
		if v == nil {
			delete(base, k)
			continue
		}
		bm, bok := base[k].(map[string]interface{})
		om, ook := v.(map[string]interface{})
		if bok && ook {
			merge(bm, om)
		} else {
			base[k] = v
		}
	}
}

type kubeVersion struct {
	Version, Major, Minor, GitVersion string
}

func (k kubeVersion) String() string { return k.Version }

// VersionSet answers .Capabilities.APIVersions.Has.
type VersionSet []string

func (s VersionSet) Has(v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

type capabilities struct {
	KubeVersion kubeVersion
	APIVersions VersionSet
}

// Built-in API groups of every supported Kubernetes; --api-versions adds more.
var builtinAPIVersions = []string{
	"v1", "apps/v1", "batch/v1", "policy/v1", "rbac.authorization.k8s.io/v1",
	"coordination.k8s.io/v1", "events.k8s.io/v1", "networking.k8s.io/v1",
	"apiextensions.k8s.io/v1", "autoscaling/v2",
}

// Helm's install order of kinds; other kinds come after these, in file order.
var installOrder = []string{
	"PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
	"PodDisruptionBudget", "ServiceAccount", "Secret", "ConfigMap", "StorageClass",
	"PersistentVolume", "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
	"ClusterRoleBinding", "Role", "RoleBinding", "Service", "DaemonSet", "Pod",
	"ReplicaSet", "Deployment", "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob",
	"Ingress", "APIService",
}

func kindRank(kind string) int {
	for i, k := range installOrder {
		if k == kind {
			return i
		}
	}
	return len(installOrder)
}

type document struct {
	source, body string
	rank         int
}

func render(o options) (string, error) {
	chartDir := o.chart
	meta, err := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return "", err
	}
	chartName, _ := meta["name"].(string)
	if chartName == "" {
		return "", fmt.Errorf("%s/Chart.yaml has no name", chartDir)
	}
	kv, err := semver.NewVersion(o.kubeVersion)
	if err != nil {
		return "", fmt.Errorf("--kube-version %q: %w", o.kubeVersion, err)
	}
	if want, _ := meta["kubeVersion"].(string); want != "" {
		c, err := semver.NewConstraint(want)
		if err != nil {
			return "", fmt.Errorf("Chart.yaml kubeVersion %q: %w", want, err)
		}
		if !c.Check(kv) {
			return "", fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes v%s", want, kv)
		}
	}

	values, err := readYAML(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return "", err
	}
	for _, f := range o.valueFiles {
		over, err := readYAML(f)
		if err != nil {
			return "", err
		}
		merge(values, over)
	}
	if err := validate(chartDir, chartName, values); err != nil {
		return "", err
	}

	chart := map[string]interface{}{}
	for k, v := range meta {
		chart[strings.ToUpper(k[:1])+k[1:]] = v
	}
	caps := capabilities{
		KubeVersion: kubeVersion{
			Version: "v" + kv.String(), GitVersion: "v" + kv.String(),
			Major: fmt.Sprint(kv.Major()), Minor: fmt.Sprint(kv.Minor()),
		},
		APIVersions: append(append(VersionSet{}, builtinAPIVersions...), o.apiVersions...),
	}
	top := map[string]interface{}{
		"Values": values,
		"Chart":  chart,
		"Release": map[string]interface{}{
			"Name": o.release, "Namespace": o.namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Capabilities": caps,
	}

	tpl := template.New("chart").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = func(v interface{}) string {
		out, err := yaml2.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(out), "\n")
	}
	funcs["toJson"] = func(v interface{}) string {
		out, err := json.Marshal(v)
		if err != nil {
			return ""
		}
		return string(out)
	}
	funcs["fromYaml"] = func(s string) map[string]interface{} {
		m := map[string]interface{}{}
		if err := yaml.Unmarshal([]byte(s), &m); err != nil {
			m["Error"] = err.Error()
		}
		return m
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if s, ok := v.(string); v == nil || (ok && s == "") {
			return v, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := tpl.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	tpl.Funcs(funcs)

	templatesDir := filepath.Join(chartDir, "templates")
	var names []string
	err = filepath.WalkDir(templatesDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, path)
		name := chartName + "/" + filepath.ToSlash(rel)
		text, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if _, err := tpl.New(name).Parse(string(text)); err != nil {
			return err
		}
		names = append(names, name)
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(names)

	execute := func(name string) (string, error) {
		data := map[string]interface{}{}
		for k, v := range top {
			data[k] = v
		}
		data["Template"] = map[string]interface{}{"Name": name, "BasePath": chartName + "/templates"}
		var buf bytes.Buffer
		if err := tpl.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}

	if o.notes {
		return execute(chartName + "/templates/NOTES.txt")
	}

	var docs []document
	if o.includeCRDs {
		crds, _ := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
		sort.Strings(crds)
		for _, f := range crds {
			text, err := os.ReadFile(f)
			if err != nil {
				return "", err
			}
			rel, _ := filepath.Rel(chartDir, f)
			for _, body := range splitDocuments(string(text)) {
				docs = append(docs, document{source: chartName + "/" + filepath.ToSlash(rel), body: body, rank: -1})
			}
		}
	}
	for _, name := range names {
		base := filepath.Base(name)
		if strings.HasPrefix(base, "_") || base == "NOTES.txt" {
			continue
		}
		out, err := execute(name)
		if err != nil {
			return "", err
		}
		for _, body := range splitDocuments(out) {
			var head struct {
				Kind string `yaml:"kind"`
			}
			if err := yaml.Unmarshal([]byte(body), &head); err != nil {
				return "", fmt.Errorf("YAML parse error on %s: %w\n%s", name, err, body)
			}
			docs = append(docs, document{source: name, body: body, rank: kindRank(head.Kind)})
		}
	}
	sort.SliceStable(docs, func(i, j int) bool { return docs[i].rank < docs[j].rank })
	var b strings.Builder
	for _, d := range docs {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", d.source, d.body)
	}
	return b.String(), nil
}

// splitDocuments splits a YAML stream on `---` lines, dropping empty documents.
func splitDocuments(s string) []string {
	var docs []string
	var cur []string
	flush := func() {
		body := strings.TrimSpace(strings.Join(cur, "\n"))
		if body != "" {
			docs = append(docs, body)
		}
		cur = nil
	}
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimRight(line, " \t") == "---" {
			flush()
			continue
		}
		cur = append(cur, line)
	}
	flush()
	return docs
}

// validate checks the merged values against the chart's values.schema.json, if any,
// and lists every violation as Helm does.
func validate(chartDir, chartName string, values map[string]interface{}) error {
	schema, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	result, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schema), gojsonschema.NewGoLoader(values))
	if err != nil {
		return fmt.Errorf("values.schema.json: %w", err)
	}
	if result.Valid() {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "values don't meet the specifications of the schema(s) in the following chart(s):\n%s:\n", chartName)
	for _, e := range result.Errors() {
		fmt.Fprintf(&b, "- %s\n", e)
	}
	return fmt.Errorf("%s", strings.TrimSuffix(b.String(), "\n"))
}
