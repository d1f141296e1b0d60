package argocdhealth

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The script Argo CD gets (deploy/argocd/argocd-cm-patch.yaml inlines the same bytes; a Rust
// test in crates/everynode-api checks that).
const scriptPath = "../../deploy/argocd/health.lua"

// One sample per file in testdata: the status Argo CD must show, and the start of its message.
var samples = []struct {
	file, status, message string
}{
	{"new.json", "Progressing", "Waiting for the everynode controller to observe generation 1"},
	{"generation-not-observed.json", "Progressing",
		"Waiting for the everynode controller to observe generation 6"},
	{"rolling.json", "Progressing", "RollingOut: 1 of 3 node(s) run revision node-exporter-58d4b6c7f9"},
	{"held.json", "Progressing", "RolloutHeld: 1 of 3 node(s) run revision"},
	{"complete.json", "Healthy",
		"RolloutComplete: 3 of 3 node(s) run revision node-exporter-58d4b6c7f9, all available"},
	{"paused.json", "Suspended", "Rollout paused (spec.paused)"},
	{"paused-after-rollout.json", "Suspended", "Rollout paused (spec.paused)"},
	{"frozen.json", "Suspended", "Set frozen (spec.frozen)"},
	{"failed.json", "Degraded",
		"ProgressDeadlineExceeded: no pod of the new revision became available for 600s"},
	{"template-rejected.json", "Degraded",
		"TemplateRejected: the apiserver refuses pods of the template"},
}

func script(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(scriptPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestSamples(t *testing.T) {
	lua := script(t)
	for _, sample := range samples {
		t.Run(sample.file, func(t *testing.T) {
			object, err := LoadObject(filepath.Join("testdata", sample.file))
			if err != nil {
				t.Fatal(err)
			}
			health, err := Run(lua, object)
			if err != nil {
				t.Fatalf("the script failed: %v", err)
			}
			if health.Status != sample.status || !strings.HasPrefix(health.Message, sample.message) {
				t.Errorf("got %s %q, want %s %q…", health.Status, health.Message, sample.status,
					sample.message)
			}
		})
	}
}

// Every file in testdata is a sample above.
func TestEverySampleFileIsChecked(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	var found, listed []string
	for _, file := range files {
		found = append(found, filepath.Base(file))
	}
	for _, sample := range samples {
		listed = append(listed, sample.file)
	}
	sort.Strings(found)
	sort.Strings(listed)
	if strings.Join(found, " ") != strings.Join(listed, " ") {
		t.Errorf("testdata has %v, the test checks %v", found, listed)
	}
}

// The harness itself: what Argo CD makes of scripts that go wrong.
func TestHarnessAsArgoCD(t *testing.T) {
	object := map[string]any{"metadata": map[string]any{"generation": int64(3)}}
	cases := []struct {
		name, script, status string
		fails                bool
	}{
		{"whole numbers stay numbers", `return {status = "Healthy", message = tostring(obj.metadata.generation + 1)}`, "Healthy", false},
		{"an unknown status is Unknown", `return {status = "Fine"}`, "Unknown", false},
		{"no string library", `return {status = string.upper("healthy")}`, "", true},
		{"a runaway script is stopped", `while true do end`, "", true},
		{"a table must come back", `return "Healthy"`, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			health, err := Run(c.script, object)
			if (err != nil) != c.fails || health.Status != c.status {
				t.Errorf("got %+v, %v", health, err)
			}
			if c.name == "whole numbers stay numbers" && health.Message != "4" {
				t.Errorf("message %q, want 4", health.Message)
			}
		})
	}
}
