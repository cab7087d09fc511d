// SessionFold.cs: the fold's rules one by one (as holo/session/state.py states them), then
// every scenario of tests/vectors/session_fold.json folded from its plain forms.
using System.Collections.Generic;
using NUnit.Framework;

namespace Holo.Bridge.Core.Tests
{
    [TestFixture]
    public class SessionFoldTests
    {
        SessionState state;
        long seq;

        [SetUp]
        public void Start()
        {
            state = new SessionState();
            seq = 0;
        }

        void Join(string pid, string role) { SessionFold.Apply(state, SessionEvent.Joined(++seq, seq, pid, new Participant(pid, role, pid))); }
        void About(string kind, string actor, string pid) { SessionFold.Apply(state, SessionEvent.ForParticipant(kind, ++seq, seq, actor, pid)); }

        [Test]
        public void TheFirstPresenterToJoinTakesControl()
        {
            Join("e", Roles.Expert);
            Assert.AreEqual("", state.Controller);
            Join("p1", Roles.Presenter);
            Join("p2", Roles.Presenter);
            Assert.AreEqual("p1", state.Controller);
            Assert.AreEqual(3, state.Seq);
        }

        [Test]
        public void ControlFallsBackToTheFirstPresentPresenterWhenItsHolderLeavesOrIsAway()
        {
            Join("p1", Roles.Presenter);
            Join("p2", Roles.Presenter);
            Join("p3", Roles.Presenter);
            About(EventKinds.Away, "p2", "p2");
            About(EventKinds.Left, "p1", "p1");
            Assert.AreEqual("p3", state.Controller, "p2 is away: the next present presenter");
            About(EventKinds.Away, "p3", "p3");
            Assert.AreEqual("", state.Controller);
            About(EventKinds.Back, "p2", "p2");
            Assert.AreEqual("p2", state.Controller, "a presenter coming back takes control nobody holds");
            Assert.IsTrue(state.Participants.Get("p2").Present);
            Assert.IsFalse(state.Participants.Get("p3").Present);
        }

        [Test]
        public void RequestsAreKeptOnceInOrderAndDroppedOnGrantLeaveOrAway()
        {
            Join("p", Roles.Presenter);
            Join("e1", Roles.Expert);
            Join("e2", Roles.Expert);
            Join("e3", Roles.Expert);
            About(EventKinds.ControlRequested, "e2", "e2");
            About(EventKinds.ControlRequested, "e1", "e1");
            About(EventKinds.ControlRequested, "e2", "e2");
            About(EventKinds.ControlRequested, "e3", "e3");
            CollectionAssert.AreEqual(new[] { "e2", "e1", "e3" }, state.ControlRequests);
            About(EventKinds.ControlGranted, "p", "e1");
            Assert.AreEqual("e1", state.Controller);
            CollectionAssert.AreEqual(new[] { "e2", "e3" }, state.ControlRequests);
            About(EventKinds.Away, "e3", "e3");
            About(EventKinds.Left, "e2", "e2");
            CollectionAssert.IsEmpty(state.ControlRequests);
        }

        [Test]
        public void RevokingReturnsControlToTheRevokingPresenter()
        {
            Join("p1", Roles.Presenter);
            Join("p2", Roles.Presenter);
            Join("e", Roles.Expert);
            About(EventKinds.ControlGranted, "p1", "e");
            About(EventKinds.ControlRevoked, "p2", "e");
            Assert.AreEqual("p2", state.Controller);
            About(EventKinds.ControlRevoked, "p1", "e");
            Assert.AreEqual("p2", state.Controller, "revoking someone not in control changes nothing");
            Assert.AreEqual(6, state.Seq, "folded all the same");
        }

        [Test]
        public void RemovingAnIdRemovesAnAnnotationOrATelestration()
        {
            Join("p", Roles.Presenter);
            SessionFold.Apply(state, SessionEvent.ForModel(EventKinds.ModelLoaded, ++seq, 0, "p", new SceneModel("m", Pose.Identity)));
            SessionFold.Apply(state, SessionEvent.AnnotationAdded(++seq, 0, "p", new Annotation("a", "m", "p", Shapes.Marker, new[] { new Vec3(0, 0, 0) })));
            SessionFold.Apply(state, SessionEvent.TelestrationAdded(++seq, 0, "p", new Telestration("t", "trk", 5, "p", new[] { new Vec2(0, 0), new Vec2(1, 1) })));
            SessionFold.Apply(state, SessionEvent.AnnotationRemoved(++seq, 0, "p", "t"));
            SessionFold.Apply(state, SessionEvent.AnnotationRemoved(++seq, 0, "p", "a"));
            SessionFold.Apply(state, SessionEvent.AnnotationRemoved(++seq, 0, "p", "gone"));
            Assert.AreEqual(0, state.Annotations.Count);
            Assert.AreEqual(0, state.Telestrations.Count);
            Assert.AreEqual(7, state.Seq);
        }

        [Test]
        public void AModelCommittedAgainKeepsItsPlace()
        {
            Join("p", Roles.Presenter);
            foreach (string id in new[] { "m1", "m2" })
            {
                SessionFold.Apply(state, SessionEvent.ForModel(EventKinds.ModelLoaded, ++seq, 0, "p", new SceneModel(id, Pose.Identity)));
            }
            var moved = new Pose(new Vec3(1, 0, 0), Quat.Identity);
            SessionFold.Apply(state, SessionEvent.ForModel(EventKinds.AnchorCommitted, ++seq, 0, "p", new SceneModel("m1", moved)));
            CollectionAssert.AreEqual(new[] { "m1", "m2" }, state.Models.Keys);
            Assert.AreEqual(moved, state.Models.Get("m1").AnchorPose);
        }

        [Test]
        public void ARegisteredAnchorCarriesItsErrorsAndAPlacementByHandDropsThem()
        {
            Join("p", Roles.Presenter);
            SessionFold.Apply(state, SessionEvent.ForModel(EventKinds.ModelLoaded, ++seq, 0, "p", new SceneModel("m", Pose.Identity)));
            var figures = new Registration(new[] { 0.4, 0.6 }, 0.5, new[] { 1.3, 0.9 }, 0, 0, false, new[] { "4 fiducials" });
            var placed = new Pose(new Vec3(0.4, 0.9, -0.3), Quat.Identity);
            SessionFold.Apply(state, SessionEvent.ForModel(EventKinds.AnchorCommitted, ++seq, 0, "p", new SceneModel("m", placed, 0, figures)));
            Assert.AreSame(figures, state.Models.Get("m").Registration);
            Assert.AreEqual(1.3, state.Models.Get("m").Registration.WorstTre95Mm);
            Assert.AreSame(figures, state.Models.Get("m").WithTNs(5).Registration);
            SessionFold.Apply(state, SessionEvent.ForModel(EventKinds.AnchorCommitted, ++seq, 0, "p", new SceneModel("m", Pose.Identity)));
            Assert.IsNull(state.Models.Get("m").Registration);
        }

        [Test]
        public void AnEventThatDoesNotFollowIsRefusedAndChangesNothing()
        {
            Join("p", Roles.Presenter);
            var error = Assert.Throws<SessionException>(() => SessionFold.Apply(state, SessionEvent.Joined(3, 0, "q", new Participant("q", Roles.Expert, "q"))));
            StringAssert.Contains("does not follow", error.Message);
            Assert.AreEqual(1, state.Seq);
            Assert.AreEqual(1, state.Participants.Count);
        }

        [Test]
        public void AnUnknownKindIsRefusedWithAHint()
        {
            var error = Assert.Throws<SessionException>(() => SessionFold.Apply(state, SessionEvent.Unknown(1, 0, "p", "hologram_sliced")));
            StringAssert.Contains("update the client", error.Message);
            Assert.AreEqual(0, state.Seq);
        }

        [Test]
        public void ACopyIsIndependent()
        {
            Join("p", Roles.Presenter);
            SessionState copy = state.Copy();
            Join("e", Roles.Expert);
            About(EventKinds.ControlRequested, "e", "e");
            Assert.AreEqual(1, copy.Participants.Count);
            Assert.AreEqual(0, copy.ControlRequests.Count);
            Assert.AreEqual(1, copy.Seq);
        }

        [Test]
        public void SharedVectorsFoldToTheExpectedStates()
        {
            object vectors = Vectors.Load("session_fold.json");
            List<object> scenarios = J.Arr(vectors, "scenarios");
            Assert.GreaterOrEqual(scenarios.Count, 10);
            var kinds = new HashSet<string>();
            int events = 0;
            foreach (object scenario in scenarios)
            {
                string where = "scenario " + J.Long(scenario, "seed");
                SessionState folded = SessionState.FromSnapshot(Vectors.Snapshot(J.At(scenario, "snapshot_plain")));
                foreach (object e in J.Arr(scenario, "events_plain"))
                {
                    SessionEvent evt = Vectors.Event(e);
                    kinds.Add(evt.Kind);
                    SessionFold.Apply(folded, evt);
                    events++;
                }
                Vectors.AssertState(J.At(scenario, "expected"), folded, J.At(scenario, "expected_order"), where);
            }
            foreach (string kind in EventKinds.All) Assert.IsTrue(kinds.Contains(kind), "no scenario folds a " + kind + " event");
            Assert.Greater(events, 100);
        }

        [Test]
        public void SharedVectorsAnEventOutOfOrderIsRefused()
        {
            object scenario = J.Arr(Vectors.Load("session_fold.json"), "scenarios")[0];
            SessionState folded = SessionState.FromSnapshot(Vectors.Snapshot(J.At(scenario, "snapshot_plain")));
            List<object> events = J.Arr(scenario, "events_plain");
            Assert.Throws<SessionException>(() => SessionFold.Apply(folded, Vectors.Event(events[1])));
        }
    }
}
