// health computes what Argo CD and Flux (kstatus) make of a Kubernetes
// object's status, with the libraries they embed, so that tenure's tests can
// assert it against real objects. hack/health/build builds and caches it.
//
//	health lua <health.lua> [obj.json|obj.yaml|-]   Argo CD's health of the object, as JSON
//	health test <health_test.yaml>...               run Argo CD-style health tests
//	health kstatus [obj.json|obj.yaml|-]            kstatus' status.Compute, as JSON
//	health yaml [obj.json|-]                        the object as YAML (to write test fixtures)
//
// The Lua VM is set up as Argo CD's util/lua sets up a health script from
// argocd-cm (`resource.customizations.health.<group>_<Kind>`, useOpenLibs
// false): gopher-lua with only the package, base and table libraries (Argo
// CD also adds a reduced `os`, which tenure's scripts do not use), the
// object as the global `obj` (JSON numbers are Lua numbers), a one-second
// limit, and the returned table read as {status, message}; a status outside
// Healthy, Progressing, Degraded, Suspended, Missing, Unknown becomes
// Unknown with "Lua returned an invalid health status", as in Argo CD.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// HealthStatus is Argo CD's (gitops-engine's) health.HealthStatus.
type HealthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

const usage = `usage:
  health lua <health.lua> [obj.json|obj.yaml|-]
  health test <health_test.yaml>...
  health kstatus [obj.json|obj.yaml|-]
  health yaml [obj.json|-]`

func main() {
	if len(os.Args) < 2 {
		fail(usage)
	}
	var err error
	switch os.Args[1] {
	case "lua":
		err = luaCommand(os.Args[2:])
	case "test":
		err = testCommand(os.Args[2:])
	case "kstatus":
		err = kstatusCommand(os.Args[2:])
	case "yaml":
		err = yamlCommand(os.Args[2:])
	default:
		fail(usage)
	}
	if err != nil {
		fail("health: " + err.Error())
	}
}

func fail(message string) {
	fmt.Fprintln(os.Stderr, message)
	os.Exit(2)
}

// readInput reads a file, or stdin when the path is "-" or absent.
func readInput(args []string) ([]byte, error) {
	if len(args) == 0 || args[0] == "-" {
		return io.ReadAll(os.Stdin)
	}
	return os.ReadFile(args[0])
}

// parseObject reads YAML or JSON as Argo CD's test runner does
// (sigs.k8s.io/yaml into map[string]any: numbers are float64).
func parseObject(data []byte) (map[string]any, error) {
	object := map[string]any{}
	if err := yaml.Unmarshal(data, &object); err != nil {
		return nil, err
	}
	return object, nil
}

func printJSON(value any) error {
	out, err := json.Marshal(value)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}

func luaCommand(args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return errors.New(usage)
	}
	script, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	data, err := readInput(args[1:])
	if err != nil {
		return err
	}
	object, err := parseObject(data)
	if err != nil {
		return err
	}
	result, err := executeHealthLua(object, string(script))
	if err != nil {
		return err
	}
	return printJSON(result)
}

// executeHealthLua is Argo CD's VM.ExecuteHealthLua with UseOpenLibs false.
func executeHealthLua(object map[string]any, script string) (*HealthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, object))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	returned := l.Get(-1)
	table, ok := returned.(*lua.LTable)
	if !ok {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", returned.Type().String())
	}
	result := &HealthStatus{}
	for field, into := range map[string]*string{"status": &result.Status, "message": &result.Message} {
		switch value := table.RawGetString(field).(type) {
		case *lua.LNilType:
		case lua.LString:
			*into = string(value)
		default:
			return nil, fmt.Errorf("hs.%s is a %s, not a string", field, value.Type().String())
		}
	}
	switch result.Status {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
		return result, nil
	}
	return &HealthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
}

// decodeValue turns a decoded JSON value into Lua values as Argo CD does.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case []any:
		array := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			array.Append(decodeValue(l, item))
		}
		return array
	case map[string]any:
		table := l.CreateTable(0, len(converted))
		for key, item := range converted {
			table.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return table
	}
	return lua.LNil
}

// testFile is Argo CD's health_test.yaml.
type testFile struct {
	Tests []struct {
		HealthStatus HealthStatus `json:"healthStatus"`
		InputPath    string       `json:"inputPath"`
	} `json:"tests"`
}

// testCommand runs each health_test.yaml against the health.lua beside it,
// as Argo CD's TestLuaHealthScript does: every inputPath (relative to the
// test file) must give exactly healthStatus.
func testCommand(paths []string) error {
	if len(paths) == 0 {
		return errors.New(usage)
	}
	failed, ran := 0, 0
	for _, path := range paths {
		dir := filepath.Dir(path)
		script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var tests testFile
		if err := yaml.UnmarshalStrict(data, &tests); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(tests.Tests) == 0 {
			return fmt.Errorf("%s: no tests", path)
		}
		for _, test := range tests.Tests {
			ran++
			name := filepath.Join(dir, test.InputPath)
			got, err := runOne(name, string(script))
			switch {
			case err != nil:
				failed++
				fmt.Printf("FAIL %s: %v\n", name, err)
			case *got != test.HealthStatus:
				failed++
				want, _ := json.Marshal(test.HealthStatus)
				have, _ := json.Marshal(got)
				fmt.Printf("FAIL %s:\n  expected %s\n  got      %s\n", name, want, have)
			default:
				fmt.Printf("ok   %s: %s\n", name, got.Status)
			}
		}
	}
	fmt.Printf("%d health tests, %d failed\n", ran, failed)
	if failed > 0 {
		os.Exit(1)
	}
	return nil
}

func runOne(inputPath, script string) (*HealthStatus, error) {
	data, err := os.ReadFile(inputPath)
	if err != nil {
		return nil, err
	}
	object, err := parseObject(data)
	if err != nil {
		return nil, err
	}
	return executeHealthLua(object, script)
}

// kstatusResult is kstatus' Result as the helper prints it.
type kstatusResult struct {
	Status     string             `json:"status"`
	Message    string             `json:"message"`
	Conditions []status.Condition `json:"conditions"`
}

func kstatusCommand(args []string) error {
	if len(args) > 1 {
		return errors.New(usage)
	}
	data, err := readInput(args)
	if err != nil {
		return err
	}
	// As a client-go informer hands it to kstatus: integers are int64.
	data, err = yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(data); err != nil {
		return err
	}
	result, err := status.Compute(object)
	if err != nil {
		return err
	}
	conditions := result.Conditions
	if conditions == nil {
		conditions = []status.Condition{}
	}
	return printJSON(kstatusResult{Status: string(result.Status), Message: result.Message, Conditions: conditions})
}

func yamlCommand(args []string) error {
	if len(args) > 1 {
		return errors.New(usage)
	}
	data, err := readInput(args)
	if err != nil {
		return err
	}
	out, err := yaml.JSONToYAML(data)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}
