// The sample scene, built at run time: add this component to any GameObject of an OpenXR
// scene that has an XR Origin (XR Interaction Toolkit's "XR Origin (XR Rig)" prefab), set
// the server and the token, and enter Play mode or build to the headset. A scene file is
// YAML that the Unity Editor writes; none was made here (no Editor on the machines this
// package is written on), so this script makes the same objects a scene would hold:
//
//   holo                 HoloConnection, HoloClock, HoloSession, HoloSceneSync
//     head pose          HoloHeadPoseSender (main camera)
//     pointer            HoloPointerSender (the first XR ray interactor found)
//     grab               HoloGrab: whoever is in control grabs a model with any XR
//                        interactor (trigger on the ray, grip or pinch), moves it, lets go
//     status             a line of text in front of the wearer
//
// Keys (Editor, or a keyboard paired with the headset): R requests control (experts),
// G grants it to the first who asked and V takes it back (presenters), M marks the model
// where the ray points (experts and presenters). Marking and grabbing need the model's
// colliders: see addColliders.
using System.Linq;
using Holo.Bridge;
using Holo.Bridge.Core;
using Unity.XR.CoreUtils;
using UnityEngine;
#if ENABLE_INPUT_SYSTEM
using UnityEngine.InputSystem;
#endif

public sealed class HoloSampleBootstrap : MonoBehaviour
{
    [Tooltip("The web port of `holo serve --web`: https://host:port/ (plain http only on this machine).")]
    public string serverUrl = "http://127.0.0.1:8080/";
    [Tooltip("From `holo token --role presenter|expert|observer --case CASE`; or the HOLO_TOKEN environment variable.")]
    public string token = "";
    public TextAsset caCertificate;
    public string displayName = "Headset";
    [Tooltip("Give the model's meshes colliders, so the ray can mark and grab them (costs memory on big models).")]
    public bool addColliders = true;

    HoloSession session;
    HoloSceneSync scene;
    HoloPointerSender pointer;
    TextMesh status;

    void Awake()
    {
        XROrigin origin = FindObjectOfType<XROrigin>();
        Transform room = origin != null && origin.CameraFloorOffsetObject != null ? origin.CameraFloorOffsetObject.transform : new GameObject("room").transform;

        var holo = new GameObject("holo");
        holo.SetActive(false); // wired up before any Start runs
        var connection = holo.AddComponent<HoloConnection>();
        connection.serverUrl = serverUrl;
        connection.token = string.IsNullOrEmpty(token) ? System.Environment.GetEnvironmentVariable("HOLO_TOKEN") ?? "" : token;
        connection.caCertificate = caCertificate;
        var clock = holo.AddComponent<HoloClock>();
        clock.connection = connection;
        session = holo.AddComponent<HoloSession>();
        session.connection = connection;
        session.clock = clock;
        session.displayName = displayName;
        scene = holo.AddComponent<HoloSceneSync>();
        scene.session = session;
        scene.connection = connection;
        scene.room = room;

        var head = new GameObject("head pose").AddComponent<HoloHeadPoseSender>();
        head.transform.SetParent(holo.transform, false);
        head.session = session;
        head.room = room;

        pointer = new GameObject("pointer").AddComponent<HoloPointerSender>();
        pointer.transform.SetParent(holo.transform, false);
        pointer.session = session;
        pointer.room = room;
        pointer.interactor = HoloPointerSender.FindRayInteractor();

        var grab = new GameObject("grab").AddComponent<HoloGrab>();
        grab.transform.SetParent(holo.transform, false);
        grab.session = session;
        grab.scene = scene;

        status = new GameObject("status").AddComponent<TextMesh>();
        status.characterSize = 0.01f;
        status.fontSize = 40;
        status.anchor = TextAnchor.MiddleCenter;
        holo.SetActive(true);
    }

    void Update()
    {
        Camera eye = Camera.main;
        if (eye != null)
        {
            status.transform.position = eye.transform.position + eye.transform.forward * 1.2f - eye.transform.up * 0.35f;
            status.transform.rotation = Quaternion.LookRotation(status.transform.position - eye.transform.position);
        }
        SessionState state = session.State;
        string control = state.Controller == "" ? "nobody" : state.Controller == session.ParticipantId ? "you" : state.Controller;
        string levels = string.Join(", ", scene.Models.Values.Select(m => m.modelId + ": " + (m.Status ?? "loading")).ToArray());
        status.text = session.Status + (session.IsJoined ? "\n" + session.Role + " " + session.ParticipantId + "; in control: " + control : "") + (levels == "" ? "" : "\n" + levels);

        if (addColliders)
        {
            foreach (MeshFilter mesh in scene.GetComponentsInChildren<MeshFilter>())
            {
                if (mesh.GetComponent<Collider>() == null && mesh.GetComponentInParent<HoloModelView>() != null) mesh.gameObject.AddComponent<MeshCollider>();
            }
        }
        if (Pressed('R')) Act(session.RequestControl());
        if (Pressed('G') && state.ControlRequests.Count > 0) Act(session.GrantControl(state.ControlRequests[0]));
        if (Pressed('V') && state.Controller != "" && state.Controller != session.ParticipantId) Act(session.RevokeControl(state.Controller));
        if (Pressed('M')) pointer.MarkWhereItPoints(scene);
    }

    static async void Act(System.Threading.Tasks.Task<long> intent)
    {
        try
        {
            await intent;
        }
        catch (System.Exception e)
        {
            Debug.LogWarning("holo: " + e.Message); // e.g. PERMISSION_DENIED: a presenter does not request control
        }
    }

    static bool Pressed(char key)
    {
#if ENABLE_INPUT_SYSTEM
        if (Keyboard.current == null) return false;
        switch (key)
        {
            case 'R': return Keyboard.current.rKey.wasPressedThisFrame;
            case 'G': return Keyboard.current.gKey.wasPressedThisFrame;
            case 'V': return Keyboard.current.vKey.wasPressedThisFrame;
            case 'M': return Keyboard.current.mKey.wasPressedThisFrame;
            default: return false;
        }
#else
        return Input.GetKeyDown((KeyCode)char.ToLowerInvariant(key));
#endif
    }
}
